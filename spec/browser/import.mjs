// The /import page in headless Chromium against the real server and database:
//   node spec/browser/import.mjs <server url> <fixtures dir> <results.json>
// Signs in, previews every fixture of spec/fixtures/formats (a dry run: format and counts
// shown, nothing written), imports one, shows a refused file's error, and runs axe-core in
// both themes. Writes {"steps": [{"name", "ok", "error"}]} like journey.mjs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, newPage, axe, shotsDir } from './browser.mjs';

const [BASE, FIXTURES, RESULTS_FILE] = process.argv.slice(2);
const steps = [];

class Failure extends Error {}
function check(cond, message) { if (!cond) throw new Failure(message); }

async function step(name, fn) {
  try {
    await fn();
    steps.push({ name, ok: true });
  } catch (e) {
    steps.push({ name, ok: false, error: e instanceof Failure ? e.message : (e.stack || String(e)) });
  }
}

const waitText = (page, sel, re, timeout = 20000) => page.waitForFunction(
  (s, src, flags) => [...document.querySelectorAll(s)].some((e) => new RegExp(src, flags).test(e.textContent)),
  { timeout }, sel, re.source, re.flags);
const text = (page, sel) => page.$eval(sel, (e) => e.textContent.replace(/\s+/g, ' ').trim());
const api = (page, path) => page.evaluate(async (p) => (await fetch(p)).json(), path);

// file, the format the page names, the titles it holds
const FILES = [
  ['audible-api-library.json', 'Audible API page', 6],
  ['audible-api-wishlist.json', 'Audible API page', 2],
  ['audible-cli-library.json', 'audible-cli export', 6],
  ['audible-cli-library.tsv', 'audible-cli export', 6],
  ['audible-cli-library-nasty.csv', 'audible-cli export', 2],
  ['libation-library-de.csv', 'Libation export', 2],
  ['libation-library.json', 'Libation export', 1],
  ['ale-data.json', 'Audible Library Extractor export', 3],
  ['ale-library.csv', 'Audible Library Extractor export', 1],
  ['extension-download.json', 'shelfsync extension file', 3],
];

const browser = await launch();
let page;
try {
  page = await newPage(browser);

  await step('signs in and reaches /import from the dashboard', async () => {
    await page.goto(BASE + '/');
    await page.waitForSelector('form.devlogin');
    await page.type('input[name=email]', 'importer@example.com');
    await page.type('input[name=name]', 'Ida Importer');
    await page.click('form.devlogin button[type=submit]');
    await page.waitForSelector('a.import-link');
    await Promise.all([page.waitForSelector('#import-file'), page.click('a.import-link')]);
    check(new URL(page.url()).pathname === '/import', 'on /import');
    await waitText(page, 'h1', /Import a file/);
  });

  let seen = 0;
  for (const [file, format, titles] of FILES) {
    await step(`previews ${file}: ${format}, ${titles} titles, nothing written`, async () => {
      const input = await page.$('#import-file');
      await input.uploadFile(join(FIXTURES, file));
      await page.waitForFunction((f) => {
        const n = document.querySelector('.file-name');
        return n && n.textContent.startsWith(f) && document.querySelector('.outcome.preview .format, .error');
      }, { timeout: 20000 }, file);
      check(!(await page.$('.error')), 'an error: ' + ((await page.$('.error')) && await text(page, '.error')));
      const shown = await text(page, '.outcome.preview .format');
      check(shown === format, `format: expected ${format}, got ${shown}`);
      const counts = await text(page, '.outcome.preview .counts');
      check(counts.startsWith(`${titles} title${titles === 1 ? '' : 's'} ·`), 'counts: ' + counts);
      check(await page.$('.actions .btn.primary'), 'an Import button');
      const me = await api(page, '/api/me');
      check(me.counts.library + me.counts.wishlist === 0, 'the dry run wrote nothing: ' + JSON.stringify(me.counts));
      seen++;
    });
  }

  await step('imports the Audible API library page and says what it did', async () => {
    const input = await page.$('#import-file');
    await input.uploadFile(join(FIXTURES, 'audible-api-library.json'));
    await page.waitForSelector('.outcome.preview');
    await page.click('.actions .btn.primary');
    await page.waitForSelector('.outcome.done', { timeout: 20000 });
    check((await text(page, '.outcome.done .counts')).startsWith('6 titles ·'), 'result counts');
    check(/replaced your library/.test(await text(page, '.outcome.done')), 'says which source it replaced');
    const me = await api(page, '/api/me');
    check(me.counts.library === 6, 'library count: ' + JSON.stringify(me.counts));
    await page.screenshot({ path: join(shotsDir(), 'import-done-1440-light.png') });
  });

  await step('a broken file shows the API\'s error with the line, and no Import button', async () => {
    const bad = join(process.env.SHELFSYNC_TEST_DIR || '/tmp', 'broken-library.json');
    writeFileSync(bad, '{"items": [\n{"asin": "B0BROKEN01",\n"title": tru}]}');
    const input = await page.$('#import-file');
    await input.uploadFile(bad);
    await waitText(page, '.error', /line 3, column \d+ in items\[0\]/);
    check(!(await page.$('.actions .btn.primary')), 'no Import button');
  });

  for (const [width, theme] of [[1440, 'light'], [1440, 'dark'], [390, 'light']]) {
    await step(`/import has no serious accessibility problem (${width} px, ${theme})`, async () => {
      const p = await newPage(browser, { width, height: width === 390 ? 844 : 900, theme });
      await p.setCookie(...(await page.cookies()));
      await p.goto(BASE + '/import');
      await p.waitForSelector('#import-file');
      const input = await p.$('#import-file');
      await input.uploadFile(join(FIXTURES, 'ale-data.json'));
      await p.waitForSelector('.outcome.preview');
      const problems = await axe(p);
      check(problems.length === 0, problems.join('\n'));
      check(p.problems.length === 0, p.problems.join('\n'));
      await p.screenshot({ path: join(shotsDir(), `import-preview-${width}-${theme}.png`), fullPage: true });
      await p.close();
    });
  }
  check(page.problems.length === 0, page.problems.join('\n'));
} catch (e) {
  steps.push({ name: 'the import page run', ok: false, error: e.stack || String(e) });
} finally {
  await browser.close();
  writeFileSync(RESULTS_FILE, JSON.stringify({ steps }));
}
