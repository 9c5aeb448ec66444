// The listener's journey in headless Chromium against the real server and database:
//   node spec/browser/journey.mjs <server url> <library.json> <results.json>
// library.json: {"first": [ITEM...], "second": [ITEM...]} — the two uploads the spec plays
// the extension with (ITEM as POST /api/sync/import takes it). Writes
// {"steps": [{"name", "ok", "error"}]} to results.json; the busted spec
// (journey_spec.lua) turns each step into one test. Screenshots of every page at 1440×900
// and 390×844, light and dark, go to build/screenshots/.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  launch, newPage, axe, shotsDir, texts, Failure, check, equal, stepper, waitText, settle,
} from './browser.mjs';

const [BASE, LIBRARY_FILE, RESULTS_FILE] = process.argv.slice(2);
const uploads = JSON.parse(readFileSync(LIBRARY_FILE, 'utf8'));
const SHOTS = shotsDir();
const PAGES = {};                    // name -> path, for the screenshot and axe sweep

const { steps, step } = stepper();

// ---- what the page should show, from the uploaded library ----
const lower = (s) => s.toLocaleLowerCase('en');
const final = uploads.second;
const owned = final.filter((t) => t.source === 'LIBRARY');
const wishlist = final.filter((t) => t.source === 'WISHLIST');
const hours = Math.round(owned.reduce((s, t) => s + (t.duration || 0), 0) / 6) / 10;
const progress = {
  finished: owned.filter((t) => t.listeningProgress >= 100).length,
  inProgress: owned.filter((t) => t.listeningProgress > 0 && t.listeningProgress < 100).length,
};
progress.notStarted = owned.length - progress.finished - progress.inProgress;
const n = (x) => x.toLocaleString('en');

// ---- helpers on the page ----
const url = (page) => new URL(page.url());
const countText = (page) => page.$eval('.count', (e) => e.textContent.trim());
const tileTitles = (page) => texts(page, '.grid .tile-title');
async function api(page, path) {
  return page.evaluate(async (p) => (await fetch(p, { headers: { Accept: 'application/json' } })).json(), path);
}
async function waitCount(page, expected) {
  await page.waitForFunction((e) => {
    const c = document.querySelector('.count');
    return c && c.textContent.trim() === e && !document.querySelector('.skeleton');
  }, { timeout: 15000 }, expected);
}

// The extension's part: the token from the opened tab's URL fragment, then the upload.
async function playExtension(browser, page, titles) {
  const [target] = await Promise.all([
    browser.waitForTarget((t) => t.url().includes('#token='), { timeout: 15000 }),
    page.click('.sync .btn.primary'),
  ]);
  const tabUrl = new URL(target.url());
  check(tabUrl.hostname.endsWith('audible.com'), `the new tab opens Audible, not ${tabUrl.href}`);
  const token = new URLSearchParams(tabUrl.hash.slice(1)).get('token');
  check(token && token.split('.').length === 3, 'a JWT in the #token= fragment');
  const tab = await target.page();
  if (tab) await tab.close();
  const res = await fetch(BASE + '/api/sync/import', {
    method: 'POST', headers: { Authorization: 'Bearer ' + token, 'Content-Type': 'application/json' },
    body: JSON.stringify({ titles }),
  });
  equal(res.status, 200, 'the import answer');
  await waitText(page, '.sync-status', /Waiting for the extension/, 5000).catch(() => {});
  return res.json();
}

const browser = await launch();
let page;
try {
  page = await newPage(browser);

  await step('a signed-out visitor to /dashboard is sent to sign in, and comes back after dev login', async () => {
    await page.goto(BASE + '/dashboard?from=mail');
    await page.waitForSelector('form.devlogin');
    equal(url(page).pathname, '/', 'sent to the sign-in page');
    equal(url(page).searchParams.get('next'), '/dashboard?from=mail', 'with the way back');
    PAGES.home = '/';
    await page.type('input[name=email]', 'ada@example.com');
    await page.type('input[name=name]', 'Ada Listener');
    await page.click('form.devlogin button[type=submit]');
    await page.waitForSelector('.sync');
    equal(url(page).pathname + url(page).search, '/dashboard?from=mail', 'back where the visitor was going');
    await waitText(page, 'h1', /Hello, Ada Listener/);
    await waitText(page, '.sync', /Install the shelfsync extension/);    // first-run steps
    check(await page.$eval('.last-sync', (e) => e.textContent.includes('Not synced yet')), 'says it never synced');
  });

  await step('Sync with Audible opens Audible with a token, and the dashboard notices the import', async () => {
    const answer = await playExtension(browser, page, uploads.first);
    equal(answer.imported, uploads.first.length, 'titles imported');
    const total = uploads.first.length;
    await waitText(page, '.sync-status .success', new RegExp(`Synced: ${n(total)} titles · ${n(total)} new · 0 removed`));
    // The page updated itself: first-run steps gone, the history shows the sync.
    await page.waitForSelector('.syncs .sync-row');
    check(!(await page.$('.steps')), 'first-run steps are gone after the first sync');
  });

  await step('a second sync that leaves titles out says how many were removed', async () => {
    const removed = uploads.first.length - uploads.second.length;
    check(removed > 0, 'the second upload is smaller');
    await playExtension(browser, page, uploads.second);
    const want = `Synced: ${n(uploads.second.length)} titles · 0 new · ${removed} removed`;
    await waitText(page, '.sync-status .success', new RegExp(want)).catch(async () => {
      throw new Failure(`expected "${want}", the page says "${await page.$eval('.sync-status', (e) => e.textContent)}"`);
    });
    await page.waitForFunction(() => document.querySelectorAll('.syncs .sync-row').length === 2, { timeout: 10000 });
    await waitText(page, '.syncs .sync-row:first-child .warnings li', new RegExp(`^${removed} titles not in this upload were removed`));
  });

  await step('the dashboard shows the counts, hours and last sync of the library', async () => {
    await page.reload();
    await page.waitForSelector('.stats .stat');
    const stats = await page.$$eval('.stats .stat', (els) => els.map((e) =>
      [e.querySelector('.stat-label').textContent.trim(), e.querySelector('.stat-value').textContent.trim()]));
    equal(stats, [['in your library', n(owned.length)], ['on your wishlist', n(wishlist.length)],
      ['finished', n(progress.finished)], ['in progress', n(progress.inProgress)],
      ['hours of listening', n(hours)]], 'the figures');
    await waitText(page, '.last-sync', /Last synced (just now|1 minute ago)/);
    PAGES.dashboard = '/dashboard';
  });

  await step('the library shows the titles, newest first', async () => {
    await page.click('.topbar nav a[href="/library"]');
    await waitCount(page, `${n(owned.length)} titles`);
    const expected = (await api(page, '/api/library?source=LIBRARY&limit=48')).items.map((e) => e.title.title);
    equal(await tileTitles(page), expected, 'the first page of tiles, in the API order');
    equal(await page.$$eval('.grid .tile', (els) => els.length), 48, 'tiles on the first page');
    const placeholders = await page.$$eval('.grid .tile .placeholder span', (els) => els.filter((e) => e.textContent.trim()).length);
    equal(placeholders, 48, 'every tile has its generated placeholder behind the cover');
    PAGES.library = '/library';
  });

  let query = 'sanderson';
  await step('search narrows the grid as you type, and the URL holds it', async () => {
    await page.type('.search input', query, { delay: 30 });
    const expected = await api(page, '/api/library?source=LIBRARY&limit=48&q=' + query);
    check(expected.total > 0 && expected.total < owned.length, `the search matches some titles (${expected.total})`);
    await waitCount(page, `${n(expected.total)} titles match`);
    equal(url(page).searchParams.get('q'), query, 'q in the URL');
    equal(await tileTitles(page), expected.items.map((e) => e.title.title), 'the matches, best first');
  });

  await step('a filter and a sort change the grid and the URL', async () => {
    await page.$eval('.search input', (e) => e.select());
    await page.keyboard.press('Backspace');
    await waitCount(page, `${n(owned.length)} titles`);
    equal(url(page).searchParams.get('q'), null, 'q gone from the URL');
    // The author with the most titles, from the facets the filter offers.
    await page.waitForFunction(() => document.querySelectorAll('select[name=author] option').length > 2);
    const [value, label] = await page.$eval('select[name=author] option:nth-child(2)', (o) => [o.value, o.textContent]);
    const mine = owned.filter((t) => (t.authors || []).some((a) => lower(a) === lower(value)));
    check(label === `${value} (${mine.length})`, `the facet counts the author's titles: ${label}`);
    check(mine.length > 48, `an author with more than one page of titles (${mine.length})`);
    await page.select('select[name=author]', value);
    await waitCount(page, `${n(mine.length)} titles match`);
    equal(url(page).searchParams.get('author'), value, 'author in the URL');
    await page.select('select[name=sort]', 'title');
    await page.waitForFunction(() => new URL(location.href).searchParams.get('sort') === 'title');
    const expected = await api(page, `/api/library?source=LIBRARY&limit=48&author=${encodeURIComponent(value)}&sort=title`);
    await page.waitForFunction((first) => document.querySelector('.grid .tile-title')?.textContent.trim() === first,
      { timeout: 10000 }, expected.items[0].title.title);
    equal(await tileTitles(page), expected.items.map((e) => e.title.title), 'the tiles in title order');
    const sorted = [...expected.items.map((e) => e.title.title)].sort((a, b) => a.localeCompare(b, 'en', { sensitivity: 'base' }));
    equal(expected.items.map((e) => e.title.title).slice(0, 5), sorted.slice(0, 5), 'title order is alphabetical');
    PAGES.filtered = url(page).pathname + url(page).search;
  });

  await step('scrolling to the end loads the next page, without duplicates', async () => {
    const total = Number((await countText(page)).replace(/\D/g, ''));
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    const want = Math.min(96, total);
    await page.waitForFunction((w) => document.querySelectorAll('.grid .tile').length >= w, { timeout: 15000 }, want);
    const hrefs = await page.$$eval('.grid .tile a', (els) => els.map((e) => e.getAttribute('href')));
    equal(new Set(hrefs).size, hrefs.length, 'no title twice');
    const api96 = await api(page, '/api' + PAGES.filtered.replace('/library?', '/library?source=LIBRARY&limit=96&'));
    equal(hrefs.slice(0, 96), api96.items.map((e) => '/library/' + e.asin), 'the two pages, in order');
  });

  await step('Back restores the previous view: the filter without the sort, then the whole library', async () => {
    await page.goBack();
    await page.waitForFunction(() => !new URL(location.href).searchParams.get('sort'));
    check(url(page).searchParams.get('author'), 'the author filter is still there');
    const expected = await api(page, `/api/library?source=LIBRARY&limit=48&author=${encodeURIComponent(url(page).searchParams.get('author'))}`);
    await page.waitForFunction((first) => document.querySelector('.grid .tile-title')?.textContent.trim() === first,
      { timeout: 10000 }, expected.items[0].title.title);
    equal(await tileTitles(page), expected.items.map((e) => e.title.title), 'newest first again');
    equal(await page.$eval('select[name=sort]', (s) => s.value), 'dateAdded', 'the sort box says so');
    await page.goBack();
    await waitCount(page, `${n(owned.length)} titles`);
    equal(await page.$eval('select[name=author]', (s) => s.value), '', 'the filter box is cleared');
  });

  await step('the Status filter: in progress, in the URL, counted as the dashboard counts it', async () => {
    equal(await page.$$eval('select[name=progress] option', (os) => os.map((o) => o.value)),
      ['', 'finished', 'in_progress', 'not_started'], 'all three states offered');
    await page.select('select[name=progress]', 'in_progress');
    await waitCount(page, `${n(progress.inProgress)} titles match`);
    equal(url(page).searchParams.get('progress'), 'in_progress', 'progress in the URL');
    await page.goBack();
    await waitCount(page, `${n(owned.length)} titles`);
  });

  await step('Back from a title returns to the same card at the same height, as many cards loaded; the nav link starts at the top', async () => {
    const tiles = () => page.$$eval('.grid .tile', (els) => els.length);
    const idle = () => page.waitForFunction(() => !document.querySelector('.skeleton, .more button[disabled]'), { timeout: 15000 });
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      await page.setViewport({ width: w, height: h });
      await page.goto(BASE + '/library');
      await waitCount(page, `${n(owned.length)} titles`);
      for (let i = 0; i < 3; i++) {       // four pages of the cursor
        const before = await tiles();
        await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
        await page.waitForFunction((b) => document.querySelectorAll('.grid .tile').length > b, { timeout: 15000 }, before);
        await idle();
      }
      const loaded = await tiles();
      check(loaded >= 4 * 48 || loaded === owned.length, `${w}: four pages loaded (${loaded})`);
      // The 121st card, 300 px below the top of the window: deep in the grid, the sentinel far below.
      const href = await page.$eval('.grid .tile:nth-child(121)', (e) => { e.scrollIntoView(); window.scrollBy(0, -300); return e.querySelector('a').getAttribute('href'); });
      const card = `.grid .tile-link[href="${href}"]`;
      await idle();
      const top = () => page.$eval(card, (e) => e.closest('.tile').getBoundingClientRect().top);
      const at = await top();
      check(Math.abs(at - 300) < 2, `${w}: the card is 300 px down (${at})`);
      equal(await tiles(), loaded, `${w}: nothing more loaded at that place`);
      await new Promise((r) => setTimeout(r, 200));      // a listener's pause: the scroll stops
      await page.click(card);
      await page.waitForSelector('.title-info h1');
      equal(await page.evaluate(() => window.scrollY), 0, `${w}: the title page starts at the top`);
      await page.goBack();
      await page.waitForFunction((c, t) => {
        const e = document.querySelector(c);
        return e && Math.abs(e.closest('.tile').getBoundingClientRect().top - t) < 2;
      }, { timeout: 15000 }, card, at).catch(async () => {
        throw new Failure(`${w}: after Back the card is at ${await top().catch(() => 'nowhere')} px, not ${at}, with ${await tiles()} cards of ${loaded}`);
      });
      await idle();
      equal(await tiles(), loaded, `${w}: the same number of cards after Back`);
      check(Math.abs((await top()) - at) < 2, `${w}: the card stays at ${at} px (${await top()})`);
      await page.screenshot({ path: join(SHOTS, `library-back-${w}-light.png`) });
      // A fresh visit by the nav link (from the title page) starts at the top, with one page.
      await page.click(card);
      await page.waitForSelector('.title-info h1');
      await page.click('.topbar nav a[href="/library"]');
      await waitCount(page, `${n(owned.length)} titles`);
      equal(await tiles(), 48, `${w}: one page after the nav link`);
      equal(await page.evaluate(() => window.scrollY), 0, `${w}: the nav link starts at the top`);
    }
    await page.setViewport({ width: 1440, height: 900 });
  });

  await step('the wishlist tab and the list view, both in the URL', async () => {
    await page.click('.tabs a:nth-child(2)');
    await waitCount(page, `${n(wishlist.length)} titles`);
    equal(url(page).searchParams.get('source'), 'WISHLIST', 'source in the URL');
    await page.click('.views .btn:nth-child(2)');
    await page.waitForSelector('.rows .row');
    equal(url(page).searchParams.get('view'), 'list', 'view in the URL');
    const expected = await api(page, '/api/library?source=WISHLIST&limit=48');
    equal(await texts(page, '.rows .row-title'), expected.items.map((e) => e.title.title), 'the rows, newest first');
    PAGES.wishlist = url(page).pathname + url(page).search;
  });

  await step('the keyboard reaches the search box and opens a title, with a visible focus ring', async () => {
    await page.goto(BASE + '/library');
    await page.waitForSelector('.grid .tile');
    const focused = () => page.evaluate(() => {
      const e = document.activeElement;
      return { tag: e.tagName, cls: e.className, href: e.getAttribute('href'), ring: getComputedStyle(e).boxShadow };
    });
    let f, presses = 0;
    do { await page.keyboard.press('Tab'); presses++; f = await focused(); } while (f.tag !== 'INPUT' && presses < 20);
    equal(f.tag, 'INPUT', 'Tab reaches the search box');
    check(f.ring && f.ring !== 'none', 'the focused box shows a ring');
    do { await page.keyboard.press('Tab'); presses++; f = await focused(); } while (f.cls !== 'tile-link' && presses < 60);
    equal(f.cls, 'tile-link', 'Tab reaches the first tile');
    check(f.ring && f.ring !== 'none', 'the focused tile shows a ring');
    await page.keyboard.press('Enter');
    await page.waitForFunction((h) => location.pathname === h, {}, f.href);
    await page.waitForSelector('.title-info h1');
  });

  await step('the title page shows every field, links that filter the library, and the summary as text', async () => {
    const t = final.find((x) => x.summary && x.summary.includes('<'));
    await page.goto(BASE + '/library/' + t.asin);
    await page.waitForSelector('.title-info h1');
    equal(await page.$eval('.title-info h1', (e) => e.textContent), t.title, 'title');
    const fields = Object.fromEntries(await page.$$eval('.fields .field', (els) => els.map((e) =>
      [e.querySelector('dt').textContent, e.querySelector('dd').textContent.trim()])));
    equal(fields['Narrated by'], t.narrators.join(', '), 'narrators');
    equal(fields.Publisher, t.publisher, 'publisher');
    equal(fields.Released, t.releaseDate, 'release date');
    equal(fields.ASIN, t.asin, 'ASIN');
    const authorLinks = await page.$$eval('.by a', (els) => els.map((e) => e.getAttribute('href')));
    equal(authorLinks, t.authors.map((a) => '/library?' + new URLSearchParams({ author: a })), 'author links filter the library');
    const summary = await page.$eval('.summary', (e) => e.textContent);
    check(summary.includes(t.summary.split('\n\n')[0].trim()), 'the summary, as written');
    check(!(await page.$('.summary img, .summary b')), 'markup in the summary stays text');
    equal(await page.$eval('.mine-status', (e) => e.textContent), t.listeningProgress >= 100 ? 'Finished'
      : t.listeningProgress > 0 ? `${t.listeningProgress}% listened` : 'Not started', 'the listener\'s progress');
    await waitText(page, '.in-lists', /Not in any of your lists yet|#\d/);
    PAGES.title = '/library/' + t.asin;
    await page.click('.by a');
    await page.waitForFunction((a) => new URL(location.href).searchParams.get('author') === a, {}, t.authors[0]);
    await page.waitForSelector('.grid .tile');
  });

  await step('stats draws its charts from the library', async () => {
    await page.goto(BASE + '/stats');
    await page.waitForSelector('svg[data-chart=years]');
    const years = owned.map((t) => new Date(t.dateAdded).getUTCFullYear());
    const span = Math.max(...years) - Math.min(...years) + 1;
    equal(await page.$$eval('svg[data-chart=years] .bar rect', (els) => els.length), span, 'one column per year');
    const legend = await texts(page, '.legend strong');
    equal(legend, [n(progress.finished), n(progress.inProgress), n(progress.notStarted)], 'finished / in progress / not started');
    const authors = await page.$$eval('[data-chart=authors] li', (els) => els.length);
    check(authors >= 3 && authors <= 10, `top authors drawn (${authors})`);
    check((await page.$$eval('[data-chart=categories] .fill', (els) => els.length)) > 0, 'hours by category drawn');
    check((await page.$$eval('[data-chart=series] .fill', (els) => els.length)) > 0, 'series completion drawn');
    PAGES.stats = '/stats';
  });

  await step('a 503 shows a banner and the page retries until it loads', async () => {
    page.fail503('/api/stats', 2);
    await page.goto(BASE + '/stats');
    await waitText(page, '.banner', /can't reach its database/);
    await page.click('.banner button');
    await page.waitForSelector('svg[data-chart=years]', { timeout: 20000 });
    check(!(await page.$('.banner')), 'the banner goes once the answer comes');
    equal(page.outageLeft(), 0, 'both 503s were answered');
  });

  await step('settings claims a handle, and a taken handle shows the API\'s message', async () => {
    // Someone else already holds "bookworm".
    const other = await fetch(BASE + '/auth/dev/login', { method: 'POST', headers: { 'Content-Type': 'application/json', Origin: BASE },
      body: JSON.stringify({ email: 'bob@example.com', name: 'Bob' }) });
    const cookie = other.headers.get('set-cookie').split(';')[0];
    const claimed = await fetch(BASE + '/api/users/me/username', { method: 'PUT',
      headers: { 'Content-Type': 'application/json', Origin: BASE, Cookie: cookie }, body: JSON.stringify({ username: 'bookworm' }) });
    equal(claimed.status, 200, 'Bob claims bookworm');

    await page.goto(BASE + '/settings');
    await page.waitForSelector('#username');
    const dd = await texts(page, '.settings .field dd');
    equal(dd, ['Ada Listener', 'ada@example.com'], 'name and email');
    await page.type('#username', 'ada_reads');
    await page.click('.inline-form button[type=submit]');
    await waitText(page, '.inline-form .success', /Your handle is now @ada_reads\./);
    check(await page.$('input[name=visibility][value=PUBLIC]:checked'), 'a claimed profile is public');
    PAGES.settings = '/settings';

    await page.$eval('#username', (e) => e.select());
    await page.type('#username', 'BookWorm');
    await page.click('.inline-form button[type=submit]');
    await waitText(page, '#username-error', /the username BookWorm is already taken/);
    equal(await page.$eval('#username', (e) => e.getAttribute('aria-invalid')), 'true', 'the field is marked invalid');

    await page.click('input[name=visibility][value=PRIVATE]');
    await page.waitForFunction(async () => (await (await fetch('/api/me')).json()).profile.visibility === 'PRIVATE', { timeout: 10000 });
  });

  await step('the library adds a title by ASIN: a preview, then the title in the grid; a refusal in the API\'s words', async () => {
    const gone = uploads.first.find((t) => !uploads.second.some((s) => s.asin === t.asin));
    check(gone, 'a title the second sync removed');
    const literal = (s) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    await page.goto(BASE + '/library');
    await waitCount(page, `${n(owned.length)} titles`);
    // Deep in the grid first: the library read again after the add (as when details arrive
    // during the enrichment) keeps every loaded card and the one on screen where it was.
    const tiles = () => page.$$eval('.grid .tile', (els) => els.length);
    for (let i = 0; i < 2; i++) {
      const before = await tiles();
      await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
      await page.waitForFunction((b) => document.querySelectorAll('.grid .tile').length > b, { timeout: 15000 }, before);
      await page.waitForFunction(() => !document.querySelector('.skeleton, .more button[disabled]'), { timeout: 15000 });
    }
    const loaded = await tiles();
    const href = await page.$eval('.grid .tile:nth-child(100)', (e) => { e.scrollIntoView(); window.scrollBy(0, -200); return e.querySelector('a').getAttribute('href'); });
    const card = `.grid .tile-link[href="${href}"]`;
    const top = () => page.$eval(card, (e) => e.closest('.tile').getBoundingClientRect().top);
    await new Promise((r) => setTimeout(r, 200));
    const at = await top();
    // The fewest cards the grid shows from here on (an observer on the grid).
    await page.evaluate(() => {
      window.fewestTiles = document.querySelectorAll('.grid .tile').length;
      new MutationObserver(() => {
        window.fewestTiles = Math.min(window.fewestTiles, document.querySelectorAll('.grid .tile').length);
      }).observe(document.querySelector('main'), { childList: true, subtree: true });
    });
    // The form is used without scrolling to it (element clicks and an input event).
    await page.$eval('.add-asin summary', (e) => e.click());
    await page.$eval('#add-asin', (e, v) => { e.value = v; e.dispatchEvent(new Event('input', { bubbles: true })); }, gone.asin.toLowerCase());
    await page.$eval('.add-asin form', (e) => e.requestSubmit());
    await waitText(page, '.asin-preview .row-title', literal(gone.title));
    await page.$eval('.asin-preview button', (e) => e.click());
    await waitText(page, '.add-asin .success', /^Added “/);
    await waitCount(page, `${n(owned.length + 1)} titles`);
    await page.waitForFunction((c, t) => {
      const e = document.querySelector(c);
      return e && Math.abs(e.closest('.tile').getBoundingClientRect().top - t) < 2;
    }, { timeout: 15000 }, card, at).catch(async () => {
      throw new Failure(`after the add the card is at ${await top().catch(() => 'nowhere')} px, not ${at}, with ${await tiles()} cards of ${loaded}`);
    });
    equal(await tiles(), loaded, 'as many cards loaded after the library was read again');
    equal(await page.evaluate(() => window.fewestTiles), loaded, 'the grid never fell back to its first page meanwhile');
    const entry = await api(page, '/api/library/' + gone.asin);
    equal([entry.source, entry.hidden], ['MANUAL', false], 'the entry');
    await page.evaluate(() => window.scrollTo(0, 0));
    // No provider is configured here: a title the catalog lacks is a 503 the page shows in place.
    await page.$eval('#add-asin', (e) => e.select());
    await page.type('#add-asin', 'B000000000');
    await page.click('.add-asin button[type=submit]');
    await waitText(page, '#add-asin-error', /no metadata provider is configured/);
    check(!(await page.$('.banner')), 'no outage banner for the provider');
  });

  // At 390 px too: a phone's layout hides and folds things (the brand's name, the
  // filters), and what it hides must not take a control's name with it.
  await step('every page: no serious or critical axe violation at 1440 and 390 px, light and dark', async () => {
    const problems = [];
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      await page.setViewport({ width: w, height: h });
      for (const theme of ['light', 'dark']) {
        await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
        for (const [name, path] of Object.entries(PAGES)) {
          if (name === 'home') continue;            // signed out: below
          await page.goto(BASE + path);
          await settle(page);
          await page.waitForSelector('main h1');
          for (const v of await axe(page)) problems.push(`${w} ${theme} ${path}: ${v}`);
        }
      }
    }
    await page.setViewport({ width: 1440, height: 900 });
    check(problems.length === 0, problems.join('\n'));
  });

  await step('screenshots of every page at 1440×900 and 390×844 in both themes, none wider than the screen', async () => {
    let count = 0;
    const overflow = [];
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      await page.setViewport({ width: w, height: h });
      for (const theme of ['light', 'dark']) {
        await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
        for (const [name, path] of Object.entries(PAGES)) {
          if (name === 'home') continue;
          await page.goto(BASE + path);
          await settle(page);
          await page.screenshot({ path: join(SHOTS, `${name}-${w}-${theme}.png`) });
          count++;
          // A phone never scrolls sideways.
          const wide = await page.evaluate(() => document.documentElement.scrollWidth);
          if (wide > w) overflow.push(`${path} is ${wide} px wide at ${w}`);
        }
      }
    }
    check(overflow.length === 0, overflow.join('\n'));
    await page.setViewport({ width: 1440, height: 900 });
    check(count > 0, 'screenshots written');
  });

  await step('signing out from the account menu, and the signed-out home page (axe, screenshots)', async () => {
    await page.goto(BASE + '/dashboard');
    await page.waitForSelector('.avatar');
    await page.click('.avatar');
    await page.waitForSelector('.menu-panel');
    const [btn] = await page.$$('xpath/.//div[@class="menu-panel"]/button[text()="Sign out"]');
    await btn.click();
    await page.waitForSelector('form.devlogin');
    equal(url(page).pathname, '/', 'on the home page');
    equal((await api(page, '/api/me')).error, 'unauthenticated', 'the session is gone');
    const problems = [];
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      await page.setViewport({ width: w, height: h });
      for (const theme of ['light', 'dark']) {
        await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
        await page.goto(BASE + '/');
        await page.waitForSelector('form.devlogin');
        await page.screenshot({ path: join(SHOTS, `home-${w}-${theme}.png`) });
        for (const v of await axe(page)) problems.push(`${w} ${theme} /: ${v}`);
      }
    }
    check(problems.length === 0, problems.join('\n'));
  });

  await step('no Content-Security-Policy violation and no script error on any page', async () => {
    check(page.problems.length === 0, page.problems.join('\n'));
  });
} finally {
  await browser.close();
  writeFileSync(RESULTS_FILE, JSON.stringify({ steps }, null, 1));
}
