// Lists, tier lists and the shared pages in headless Chromium, against the real server:
//   node spec/browser/lists.mjs <server url> <input.json> <results.json>
// input.json: {"titles": [ITEM...]}, the library the listener syncs (POST /api/sync/import).
// Reports one step per behaviour of issue 15 (lists_spec.lua makes each a test); writes
// screenshots of every list page at 1440×900 and 390×844, light and dark.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  launch, newPage, axe, shotsDir, texts, check, equal, stepper, waitText, settle,
} from './browser.mjs';

const [BASE, INPUT_FILE, RESULTS_FILE] = process.argv.slice(2);
const library = JSON.parse(readFileSync(INPUT_FILE, 'utf8')).titles;
const SHOTS = shotsDir();
const PAGES = {};                    // name -> {path, signedOut}

const { steps, step } = stepper({ stopOnFailure: true });

// ---- the listener, over plain HTTP: sign in, sync, read the API ----
const ORIGIN = new URL(BASE).origin;
let cookie = '';
async function http(method, path, body, headers = {}) {
  const res = await fetch(BASE + path, {
    method, headers: { Origin: ORIGIN, Cookie: cookie, 'Content-Type': 'application/json', ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const set = res.headers.get('set-cookie');
  if (set) cookie = set.split(';')[0];
  const text = await res.text();
  return { status: res.status, json: text && text[0] === '{' ? JSON.parse(text) : null, text };
}
async function sync(titles) {
  const t = await http('POST', '/api/sync/token');
  equal(t.status, 200, 'sync token');
  const res = await http('POST', '/api/sync/import', { titles }, { Authorization: 'Bearer ' + t.json.token, Cookie: '' });
  equal(res.status, 200, 'sync import: ' + res.text);
}

// Five LIBRARY titles with distinct names, for the picker.
const seen = new Set();
const picks = library.filter((t) => t.source === 'LIBRARY' && !seen.has(t.title) && seen.add(t.title)).slice(0, 8);
const names = (list) => list.map((t) => t.title);

// ---- helpers on the page ----
const itemTitles = (page) => texts(page, '.items .item-title');
async function pick(page, title) {
  const input = await page.$('.picker input[type=search]');
  await input.click({ clickCount: 3 });
  await input.type(title);
  const sel = `.picks button[aria-label="Add ${title.replace(/"/g, '\\"')}"]`;
  await page.waitForSelector(sel, { timeout: 10000 });
  await page.click(sel);
  await page.waitForSelector(sel.replace('Add ', 'Added: '));
}
// Drags the element `from` onto `to` with the mouse (SortableJS' fallback follows the pointer).
async function drag(page, from, to, { below = false } = {}) {
  const a = await (await page.$(from)).boundingBox();
  const b = await (await page.$(to)).boundingBox();
  const x0 = a.x + a.width / 2, y0 = a.y + a.height / 2;
  const x1 = b.x + b.width * (below ? 0.75 : 0.25), y1 = b.y + b.height * (below ? 0.75 : 0.25);
  await page.mouse.move(x0, y0);
  await page.mouse.down();
  for (let i = 1; i <= 12; i++) {
    await page.mouse.move(x0 + ((x1 - x0) * i) / 12, y0 + ((y1 - y0) * i) / 12);
    await new Promise((r) => setTimeout(r, 16));
  }
  await new Promise((r) => setTimeout(r, 100));
  await page.mouse.up();
  await new Promise((r) => setTimeout(r, 50));
}
async function save(page) {
  await page.click('.save-bar .save');
  await waitText(page, '.save-bar [role=status]', /All changes saved/);
}
const key = (asin) => `[data-key="${asin}"]`;

const browser = await launch();
let page;
let listId, tierId;
try {
  page = await newPage(browser);

  await step('the listener signs in, syncs a library and claims a handle', async () => {
    const res = await http('POST', '/auth/dev/login', { email: 'lee@example.com', name: 'Lee Lister' });
    equal(res.status, 200, 'dev login');
    await sync(library);
    equal((await http('PUT', '/api/users/me/username', { username: 'lee_lists' })).status, 200, 'handle');
    const [name, value] = cookie.split('=');
    await page.setCookie({ name, value, url: BASE });
  });

  await step('/lists: an empty state that teaches, then a new list opens its editor', async () => {
    await page.goto(BASE + '/lists');
    await waitText(page, '.empty', /No lists yet/);
    await page.type('form.create input[name=title]', 'Road trip <picks> & "more"');
    await page.click('form.create button[type=submit]');
    await page.waitForSelector('.editor .picker');
    listId = new URL(page.url()).pathname.split('/')[2];
    equal(await page.$eval('.title-input', (e) => e.value), 'Road trip <picks> & "more"', 'the title field');
  });

  await step('the picker adds five titles found by search, in the order picked', async () => {
    for (const t of picks.slice(0, 5)) await pick(page, t.title);
    equal(await itemTitles(page), names(picks.slice(0, 5)), 'the items');
    await waitText(page, '.save-bar [role=status]', /Unsaved changes/);
  });

  let order = picks.slice(0, 5);
  await step('drag and drop moves the fifth title to the top', async () => {
    await drag(page, `${key(order[4].asin)} .drag`, `${key(order[0].asin)}`);
    order = [order[4], ...order.slice(0, 4)];
    equal(await itemTitles(page), names(order), 'the order after the drag');
  });

  await step('the keyboard moves a title down twice, the focus staying on its button, and says so', async () => {
    await page.focus(`${key(order[0].asin)} .down`);
    await page.keyboard.press('Enter');
    await page.waitForFunction((s) => document.activeElement && document.activeElement.matches(s), { timeout: 3000 }, `${key(order[0].asin)} .down`);
    await page.keyboard.press('Space');
    order = [order[1], order[2], order[0], order[3], order[4]];
    equal(await itemTitles(page), names(order), 'the order after two keyboard moves');
    await waitText(page, '.sr-only[role=status]', new RegExp('position 3 of 5'));
  });

  await step('a note, Save, reload: order and note hold (and match the API)', async () => {
    await page.type(`${key(order[0].asin)} .note-field input`, 'Start here — it hooks you.');
    await save(page);
    await page.reload();
    await page.waitForSelector('.items .item');
    equal(await itemTitles(page), names(order), 'the order after a reload');
    equal(await page.$eval(`${key(order[0].asin)} .note-field input`, (e) => e.value), 'Start here — it hooks you.', 'the note');
    const api = (await http('GET', '/api/lists/' + listId)).json;
    equal(api.items.map((i) => i.asin), order.map((t) => t.asin), 'the API order');
    PAGES['list-editor'] = { path: '/lists/' + listId };
  });

  await step('two tabs: the second save meets "changed elsewhere", loses nothing, and may overwrite', async () => {
    const other = await newPage(browser);
    await other.goto(BASE + '/lists/' + listId);
    await other.waitForSelector('.items .item');
    // Tab two removes the last title and saves first. (A tab in the background runs no
    // animation frames: each comes to the front before it is used.)
    await other.click(`${key(order[4].asin)} .remove`);
    await save(other);
    // Tab one (still on the old version) moves a title and saves: refused, edit kept.
    await page.bringToFront();
    await page.click(`${key(order[1].asin)} .up`);
    const mine = [order[1], order[0], ...order.slice(2)];
    await page.click('.save-bar .save');
    await waitText(page, '.conflict', /changed elsewhere/);
    equal(await itemTitles(page), names(mine), 'tab one keeps its edit');
    equal((await http('GET', '/api/lists/' + listId)).json.items.map((i) => i.asin),
      order.slice(0, 4).map((t) => t.asin), 'the saved list is tab two\'s');
    await page.screenshot({ path: join(SHOTS, 'list-conflict-1440-light.png') });
    await page.click('.conflict .btn.primary');
    await waitText(page, '.save-bar [role=status]', /All changes saved/);
    check(!(await page.$('.conflict')), 'the conflict is gone');
    equal((await http('GET', '/api/lists/' + listId)).json.items.map((i) => i.asin), mine.map((t) => t.asin), 'overwritten with tab one\'s');
    order = mine;
    // Tab two now holds an old version: its Reload shows tab one's list.
    await other.bringToFront();
    await other.click(`${key(order[0].asin)} .down`);
    await other.click('.save-bar .save');
    await waitText(other, '.conflict', /changed elsewhere/);
    await other.click('.conflict .btn:not(.primary)');
    await other.waitForFunction((n) => document.querySelectorAll('.items .item').length === n && !document.querySelector('.conflict'), { timeout: 5000 }, 5);
    equal(await itemTitles(other), names(order), 'reloaded to the saved list');
    check(other.problems.length === 0, other.problems.join('\n'));
    await other.close();
    await page.bringToFront();
  });

  await step('a sync that drops a listed title greys it with "no longer in your library"; one bringing it back restores it', async () => {
    const gone = order[2];
    await sync(library.filter((t) => t.asin !== gone.asin));
    await page.reload();
    await page.waitForSelector(`${key(gone.asin)}.gone`);
    await waitText(page, `${key(gone.asin)} .gone-note`, /no longer in your library/);
    equal(await itemTitles(page), names(order), 'the title stays in place');
    await page.screenshot({ path: join(SHOTS, 'list-gone-1440-light.png') });
    await sync(library);
    await page.reload();
    await page.waitForSelector(`${key(gone.asin)}:not(.gone)`);
    check(!(await page.$('.gone-note')), 'nothing greyed');
  });

  const tier = picks.slice(3, 8);     // five titles: three ranked by drag, two by keyboard
  await step('a tier list: titles picked into the unranked tray, then dragged into tiers', async () => {
    await page.goto(BASE + '/lists');
    await page.waitForSelector('.list-cards .list-card');
    await page.type('form.create input[name=title]', 'My tiers');
    await page.select('form.create select[name=kind]', 'tier');
    await page.click('form.create button[type=submit]');
    await page.waitForSelector('.tier-editor .tray');
    tierId = new URL(page.url()).pathname.split('/')[2];
    for (const t of tier) await pick(page, t.title);
    await page.setViewport({ width: 1440, height: 1600 });      // every row and the tray on screen for the mouse
    await page.evaluate(() => window.scrollTo(0, 0));
    const rows = await page.$$('.tier-row .tier-items');
    equal(await page.$$eval('.tier-label input', (els) => els.map((e) => e.value)), ['S', 'A', 'B', 'C', 'D', 'F'], 'default labels');
    check(rows.length === 7, 'six tiers and the tray');
    equal(await page.$$eval('.tray .tier-item', (els) => els.map((e) => e.dataset.key)), tier.map((t) => t.asin), 'the tray');
    // Tray -> S, tray -> S (before the first), tray -> A.
    await drag(page, `${key(tier[0].asin)} .drag`, '.tier-row:nth-child(1) .tier-items');
    await drag(page, `${key(tier[1].asin)} .drag`, `${key(tier[0].asin)}`);
    await drag(page, `${key(tier[2].asin)} .drag`, '.tier-row:nth-child(2) .tier-items');
    const inRow = (n) => page.$$eval(`.tiers > .tier-row:nth-of-type(${n}) .tier-item`, (els) => els.map((e) => e.dataset.key));
    equal(await inRow(1), [tier[1].asin, tier[0].asin], 'tier S');
    equal(await inRow(2), [tier[2].asin], 'tier A');
  });

  await step('tier list: keyboard moves up from the tray, and along a tier', async () => {
    // Waits until the title is in row n (1-6: a tier, 8: the tray) with the focus on one of
    // its buttons: the next key press goes to it.
    const landed = (asin, n) => page.waitForFunction((sel) => {
      const el = document.querySelector(sel);
      return el && el.contains(document.activeElement) && document.activeElement.matches('.mv');
    }, { timeout: 5000 }, `.tiers > :nth-child(${n}) ${key(asin)}`);
    // tier[3]: tray -> F -> D (two presses of "to the tier above"), focus kept.
    await page.focus(`${key(tier[3].asin)} .mv.up`);
    await page.keyboard.press('Enter');
    await landed(tier[3].asin, 6);
    await page.keyboard.press('Enter');
    await landed(tier[3].asin, 5);
    await waitText(page, '.sr-only[role=status]', /D, position 1/);
    // tier[4]: tray -> F -> ... -> S (6 presses), then "earlier" twice: first in S.
    await page.focus(`${key(tier[4].asin)} .mv.up`);
    for (let n = 6; n >= 1; n--) {
      await page.keyboard.press('Enter');
      await landed(tier[4].asin, n);
    }
    await page.focus(`${key(tier[4].asin)} .mv.left`);
    await page.keyboard.press('Enter');
    await page.keyboard.press('Enter');
    const inRow = (n) => page.$$eval(`.tiers > .tier-row:nth-of-type(${n}) .tier-item`, (els) => els.map((e) => e.dataset.key));
    equal(await inRow(1), [tier[4].asin, tier[1].asin, tier[0].asin], 'tier S');
    equal(await inRow(5), [tier[3].asin], 'tier D');
  });

  await step('tier list: rename a tier, remove one holding titles (asked where they go), save, reload', async () => {
    const label = await page.$('.tier-row:nth-of-type(1) .tier-label input');
    await label.click({ clickCount: 3 });
    await label.type('Top <3');
    await page.click('.tier-row:nth-of-type(2) .tier-remove');        // A holds tier[2]
    await waitText(page, '.remove-ask', /1 title in A: move them to/);
    await page.screenshot({ path: join(SHOTS, 'tierlist-remove-1440-light.png') });
    const opts = await page.$$eval('.remove-ask option', (els) => els.map((e) => e.textContent));
    equal(opts, ['Top <3', 'B', 'C', 'D', 'F', 'Unranked'], 'where the titles may go');
    const value = await page.$$eval('.remove-ask option', (els) => els.find((e) => e.textContent === 'C').value);
    await page.select('.remove-ask select', value);
    await page.click('.remove-ask .confirm-remove');
    await save(page);
    await page.reload();
    await page.waitForSelector('.tier-editor .tier-item');
    equal(await page.$$eval('.tier-label input', (els) => els.map((e) => e.value)), ['Top <3', 'B', 'C', 'D', 'F'], 'the labels');
    const api = (await http('GET', '/api/tierlists/' + tierId)).json;
    equal(api.assignments.map((a) => [a.tier, a.asin, a.position]), [
      ['Top <3', tier[4].asin, 1], ['Top <3', tier[1].asin, 2], ['Top <3', tier[0].asin, 3],
      ['C', tier[2].asin, 1], ['D', tier[3].asin, 1]], 'the saved assignments');
    PAGES['tierlist-editor'] = { path: '/tierlists/' + tierId };
    await page.setViewport({ width: 1440, height: 900 });
    PAGES.lists = { path: '/lists' };
  });

  await step('tier list: every move button is a 44×44 target overlapping no other button, cover or label, at 1440 and 390 px, light and dark', async () => {
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      await page.setViewport({ width: w, height: h });
      for (const theme of ['light', 'dark']) {
        await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
        const boxes = await page.$$eval('.tier-editor .tier-row', (rows) => rows.flatMap((row, r) => {
          const box = (e, kind) => { const b = e.getBoundingClientRect(); return { kind, r, name: e.getAttribute('aria-label') || kind, x: b.left, y: b.top, w: b.width, h: b.height }; };
          return [...row.querySelectorAll('.mv')].map((e) => box(e, 'button'))
            .concat([...row.querySelectorAll('.tier-item .cover, .tier-label input')].map((e) => box(e, 'cover or label')))
            .concat([box(row, 'row')]);
        }));
        const buttons = boxes.filter((b) => b.kind === 'button');
        check(buttons.length === 5 * 4 + 5 * 3, `${w} ${theme}: four moves per title and three tools per tier (${buttons.length})`);
        const small = buttons.filter((b) => b.w < 44 || b.h < 44).map((b) => `${b.name} ${b.w}×${b.h}`);
        check(small.length === 0, `${w} ${theme}: under 44×44: ${small.join(', ')}`);
        const overlap = (a, b) => Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x) > 0.5 && Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y) > 0.5;
        const things = boxes.filter((b) => b.kind !== 'row');
        const hits = [];
        for (const a of buttons) {
          for (const b of things) if (a !== b && overlap(a, b)) hits.push(`${a.name} / ${b.name}`);
          const row = boxes.find((b) => b.kind === 'row' && b.r === a.r);
          if (a.y < row.y - 0.5 || a.y + a.h > row.y + row.h + 0.5) hits.push(`${a.name} outside its tier row`);
        }
        check(hits.length === 0, `${w} ${theme}: overlaps: ${[...new Set(hits)].slice(0, 6).join('; ')}`);
        // The tray's heading is one word on one line (a range over its text gives one box per line).
        const lines = await page.$eval('.tray-label h2', (e) => {
          const r = document.createRange();
          r.selectNodeContents(e);
          return new Set([...r.getClientRects()].map((b) => Math.round(b.top))).size;
        });
        equal(lines, 1, `${w} ${theme}: "Unranked" on one line`);
        await page.screenshot({ path: join(SHOTS, `tierlist-moves-${w}-${theme}.png`), fullPage: true });
      }
    }
    await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: 'light' }]);
    await page.setViewport({ width: 1440, height: 900 });
  });

  await step('/lists: cover strips, badges and counts; rename and change visibility; delete names what goes', async () => {
    await page.goto(BASE + '/lists');
    await page.waitForSelector('.list-card h3');
    equal(await texts(page, '.list-card h3'), ['My tiers', 'Road trip <picks> & "more"'], 'newest change first');
    equal(await page.$$eval('.list-card:nth-child(2) .strip .cover', (els) => els.length), 4, 'four covers in the strip');
    await waitText(page, '.list-card:nth-child(2) .list-card-meta', /List · 5 titles/);
    await waitText(page, '.list-card:nth-child(1) .badge', /Private/);
    // A third list to rename and delete.
    const made = (await http('POST', '/api/lists', { title: 'Scratch', items: [{ asin: picks[0].asin }, { asin: picks[1].asin }] })).json;
    await page.reload();
    await page.waitForSelector('.list-card h3');
    const card = '.list-card:nth-child(1)';
    await waitText(page, `${card} h3`, /Scratch/);
    await page.click(`${card} .list-card-actions .btn:not(.danger)`);
    const input = await page.$(`${card} form.rename input`);
    await input.click({ clickCount: 3 });
    await input.type('Scratch two');
    await page.click(`${card} form.rename .primary`);
    await waitText(page, `${card} h3`, /Scratch two/);
    await page.select(`${card} .vis select`, 'UNLISTED');
    await waitText(page, `${card} .badge`, /Unlisted/);
    const got = (await http('GET', '/api/lists/' + made.id)).json;
    equal([got.title, got.visibility], ['Scratch two', 'UNLISTED'], 'saved');
    await page.click(`${card} .btn.danger`);
    await waitText(page, `${card} .confirm`, /Delete the list “Scratch two” and its 2 titles, their order and notes\? Its shared link stops working\. The titles stay in your library\./);
    await page.click(`${card} .confirm-delete`);
    await page.waitForFunction(() => document.querySelectorAll('.list-card').length === 2, { timeout: 5000 });
    equal((await http('GET', '/api/lists/' + made.id)).status, 404, 'deleted');
  });

  await step('signed out: PRIVATE is a 404 page, UNLISTED opens by its link only, PUBLIC is on the profile', async () => {
    const ctx = await browser.createBrowserContext();
    const anon = await newPage(ctx);
    const visit = async (path) => { const r = await anon.goto(BASE + path); await anon.waitForSelector('main h1'); await settle(anon); return r.status(); };
    equal(await visit('/lists/' + listId), 404, 'PRIVATE: HTTP status');
    await waitText(anon, 'main h1', /List not found/);
    // Shot later, when this list is public again: an id no list has shows the same 404 page.
    PAGES['not-found'] = { path: '/lists/00000000-0000-4000-8000-000000000000', signedOut: true };
    equal((await http('PATCH', '/api/lists/' + listId, { visibility: 'UNLISTED' })).status, 200, 'made unlisted');
    equal(await visit('/lists/' + listId), 200, 'UNLISTED by link');
    equal(await texts(anon, '.wall .tile-title'), names(order), 'the wall, in order');
    await waitText(anon, '.note', /Start here/);
    await waitText(anon, '.by a', /@lee_lists/);
    check(await anon.$('.share button'), 'a share button');
    await visit('/u/lee_lists');
    await waitText(anon, 'main h1', /@lee_lists/);
    await waitText(anon, 'main', /No public lists yet/);
    equal((await http('PATCH', '/api/lists/' + listId, { visibility: 'PUBLIC' })).status, 200, 'made public');
    equal((await http('PATCH', '/api/tierlists/' + tierId, { visibility: 'PUBLIC' })).status, 200, 'tier list public');
    await visit('/u/lee_lists');
    equal(await texts(anon, '.list-card h3'), ['My tiers', 'Road trip <picks> & "more"'], 'the public lists on the profile');
    check(!(await anon.$('.list-card .btn')), 'no owner actions for visitors');
    await anon.click('.list-card:nth-child(1) h3 a');
    await anon.waitForSelector('.tiers .tier-item');
    equal(await texts(anon, '.tier-label h2'), ['Top <3', 'B', 'C', 'D', 'F'], 'the tier list, read-only');
    PAGES.profile = { path: '/u/lee_lists', signedOut: true };
    PAGES['list-shared'] = { path: '/lists/' + listId, signedOut: true };
    PAGES['tierlist-shared'] = { path: '/tierlists/' + tierId, signedOut: true };
    check(anon.problems.length === 0, anon.problems.join('\n'));
    await ctx.close();
  });

  await step('axe-core finds no serious or critical violation on any list page, light or dark; screenshots at both widths', async () => {
    const ctx = await browser.createBrowserContext();
    const anon = await newPage(ctx);
    const problems = [];
    const overflow = [];
    for (const [w, h] of [[1440, 900], [390, 844]]) {
      for (const p of [page, anon]) await p.setViewport({ width: w, height: h });
      for (const theme of ['light', 'dark']) {
        for (const p of [page, anon]) await p.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
        for (const [name, { path, signedOut }] of Object.entries(PAGES)) {
          const p = signedOut ? anon : page;
          await p.goto(BASE + path);
          await p.waitForSelector('main h1');
          await settle(p);
          await p.screenshot({ path: join(SHOTS, `${name}-${w}-${theme}.png`) });
          for (const v of await axe(p)) problems.push(`${w} ${theme} ${name}: ${v}`);
          const wide = await p.evaluate(() => document.documentElement.scrollWidth);
          if (wide > w) overflow.push(`${path} is ${wide} px wide at ${w}: ` + await p.evaluate((w) => [...document.querySelectorAll('body *')]
            .filter((e) => e.getBoundingClientRect().right > w).slice(0, 4).map((e) => e.tagName + '.' + e.className).join(' '), w));
        }
      }
    }
    await ctx.close();
    check(problems.length === 0, problems.join('\n'));
    check(overflow.length === 0, overflow.join('\n'));
  });

  await step('no Content-Security-Policy violation and no script error on any page', async () => {
    check(page.problems.length === 0, page.problems.join('\n'));
  });
} finally {
  await browser.close();
  writeFileSync(RESULTS_FILE, JSON.stringify({ steps }, null, 1));
}
