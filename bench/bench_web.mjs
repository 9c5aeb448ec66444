// bench-web (scripts/bench-web.sh): the web app in headless Chromium, one user with a
// large library.
//   node bench/bench_web.mjs <server url> <titles.json> <runs>
// 1. navigation -> first 24 tiles drawn on /library: the page's own mark 'library:drawn'
//    (set in the frame after the first page rendered) as ms since navigation start, with
//    the browser cache off (a first visit) and on (a return visit, 304s);
// 2. search redraw: from the search being sent (mark 'library:query', after the 250 ms
//    debounce) to the new grid drawn, over several searches; and the keystroke-to-redraw
//    time (debounce included) beside it;
// 3. bytes: the JS and CSS the page loaded, gzip-compressed as the server sends them
//    (Content-Length of each answer with Accept-Encoding: gzip).
import { readFileSync } from 'node:fs';
import { launch, newPage } from '../spec/browser/browser.mjs';

const [BASE, TITLES, RUNS = '7'] = process.argv.slice(2);
const runs = Number(RUNS);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };
const fmt = (xs) => `median ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)})`;

// The user, a session and the library through the real sign-in and sync endpoints.
const login = await fetch(BASE + '/auth/dev/login', { method: 'POST',
  headers: { 'Content-Type': 'application/json', Origin: BASE }, body: '{"email":"bench@example.com","name":"Bench"}' });
const cookie = login.headers.get('set-cookie').split(';')[0];
const [cname, cvalue] = cookie.split('=');
const tok = await (await fetch(BASE + '/api/sync/token', { method: 'POST', headers: { Origin: BASE, Cookie: cookie } })).json();
const body = '{"titles":' + readFileSync(TITLES, 'utf8') + '}';
const imp = await fetch(BASE + '/api/sync/import', { method: 'POST',
  headers: { Authorization: 'Bearer ' + tok.token, 'Content-Type': 'application/json' }, body });
const answer = await imp.json();
if (imp.status !== 200) throw new Error('import: ' + JSON.stringify(answer));

const browser = await launch();
try {
  const drawn = async (page) => page.waitForFunction(() => {
    const m = performance.getEntriesByName('library:drawn');
    return m.length && document.querySelectorAll('.grid .tile .cover').length >= 24 ? m[m.length - 1].startTime : false;
  }, { timeout: 30000 }).then((h) => h.jsonValue());

  const cold = [], warm = [], parts = [];
  // Where a first visit's time goes: the shell's modules evaluated, /api/me, the first page.
  const split = (page) => page.evaluate(() => {
    const r = performance.getEntriesByType('resource');
    const end = (re) => Math.max(0, ...r.filter((e) => re.test(e.name)).map((e) => e.responseEnd));
    return { shell: end(/\/js\/pages\/library\.js$/), me: end(/\/api\/me$/), page: end(/\/api\/library\?/) };
  });
  let bytes = null;
  for (let i = 0; i < runs; i++) {
    for (const cache of [false, true]) {
      const page = await newPage(browser);
      await page.setCookie({ name: cname, value: cvalue, url: BASE });
      await page.setCacheEnabled(cache);
      if (cache) { await page.goto(BASE + '/library'); await drawn(page); }   // fill the cache
      const sizes = [];
      page.on('response', (r) => {
        const type = r.request().resourceType();
        if (type === 'script' || type === 'stylesheet') {
          sizes.push({ url: r.url(), type, gz: r.headers()['content-encoding'] === 'gzip',
            len: Number(r.headers()['content-length'] || 0), status: r.status() });
        }
      });
      await page.goto(BASE + '/library');
      (cache ? warm : cold).push(await drawn(page));
      if (!cache) parts.push(await split(page));
      if (!cache && !bytes) bytes = sizes;
      await page.close();
    }
  }

  // Searches: each typed into the box of an open /library.
  const page = await newPage(browser);
  await page.setCookie({ name: cname, value: cvalue, url: BASE });
  await page.goto(BASE + '/library');
  await drawn(page);
  const redraw = [], typed = [], apiMs = [];
  const words = ['sanderson', 'pratchett', 'christie', 'durrenmat', 'mistborn', 'kramer', 'discworld'];
  for (let i = 0; i < runs; i++) {
    const q = words[i % words.length];
    const before = await page.evaluate(() => performance.getEntriesByName('library:drawn').length);
    await page.$eval('.search input', (e) => { e.focus(); e.select(); });
    await page.keyboard.type(q);
    const t0 = await page.evaluate(() => performance.now());
    await page.waitForFunction((n) => performance.getEntriesByName('library:drawn').length > n, { timeout: 30000 }, before);
    const r = await page.evaluate(() => {
      const q = performance.getEntriesByName('library:query'), d = performance.getEntriesByName('library:drawn');
      const api = performance.getEntriesByType('resource').filter((e) => /\/api\/library\?.*q=/.test(e.name));
      return { query: q[q.length - 1].startTime, drawn: d[d.length - 1].startTime, api: api[api.length - 1].duration };
    });
    redraw.push(r.drawn - r.query);
    apiMs.push(r.api);
    typed.push(r.drawn - t0);
  }

  const js = bytes.filter((b) => b.type === 'script'), css = bytes.filter((b) => b.type === 'stylesheet');
  const sum = (xs) => xs.reduce((s, b) => s + b.len, 0);
  const total = sum(bytes);
  console.log(`library: ${answer.libraryCount} titles + ${answer.wishlistCount} wishlist; ${runs} runs each`);
  console.log('');
  console.log('| measure | result | aim |');
  console.log('|---|---|---|');
  console.log(`| /library navigation -> first 24 tiles drawn, first visit (cache off) | ${fmt(cold)} | < 800 ms |`);
  console.log(`| /library navigation -> first 24 tiles drawn, return visit (304s) | ${fmt(warm)} | |`);
  const at = (k) => median(parts.map((p) => p[k])).toFixed(0);
  console.log(`| first visit, where the time goes (medians, ms since navigation) | page module loaded ${at('shell')}, /api/me answered ${at('me')}, first /api/library page answered ${at('page')} | |`);
  console.log(`| search sent -> grid redrawn | ${fmt(redraw)} | < 150 ms |`);
  console.log(`| of which the /api/library?q= answer (resource timing) | ${fmt(apiMs)} | |`);
  console.log(`| last keystroke -> grid redrawn (250 ms debounce included) | ${fmt(typed)} | |`);
  console.log(`| JS + CSS loaded by /library, gzip | ${(total / 1024).toFixed(1)} KB (${js.length} JS files ${(sum(js) / 1024).toFixed(1)} KB, ${css.length} CSS ${(sum(css) / 1024).toFixed(1)} KB; all gzip: ${bytes.every((b) => b.gz)}) | < 150 KB |`);
} finally {
  await browser.close();
}
