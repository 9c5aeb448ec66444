// Headless Debian Chromium driven by puppeteer-core, for the browser specs and bench-web.
// Never downloads a browser: /usr/bin/chromium (deps/debian.txt), a fresh profile per run.
import puppeteer from 'puppeteer-core';
import { mkdtempSync, rmSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export async function launch() {
  const profile = mkdtempSync(join(process.env.SHELFSYNC_TEST_DIR || tmpdir(), 'chromium-'));
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', `--user-data-dir=${profile}`],
    protocolTimeout: 60000,
  });
  const close = browser.close.bind(browser);
  browser.close = async () => { await close(); rmSync(profile, { recursive: true, force: true }); };
  return browser;
}

// A page that records CSP violations and script errors (page.problems), answers cover
// requests to the cover hosts locally (no network: a square SVG for ASINs whose last digit
// is even, 404 for the rest, so both the image and the placeholder show), and uses theme.
export async function newPage(browser, { width = 1440, height = 900, theme = 'light' } = {}) {
  const page = await browser.newPage();
  page.problems = [];
  await page.setViewport({ width, height });
  await page.emulateMediaFeatures([{ name: 'prefers-color-scheme', value: theme }]);
  await page.exposeFunction('__reportViolation', (s) => page.problems.push('CSP violation: ' + s));
  await page.evaluateOnNewDocument(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__reportViolation(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile || ''}:${e.lineNumber || ''}`);
    });
  });
  page.on('pageerror', (e) => page.problems.push('page error: ' + e.message));
  await page.setRequestInterception(true);
  // page.fail503(suffix, n): the next n requests whose path ends with suffix answer 503.
  const outage = { suffix: null, left: 0 };
  page.fail503 = (suffix, n) => { outage.suffix = suffix; outage.left = n; };
  page.outageLeft = () => outage.left;
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (outage.left > 0 && url.pathname.endsWith(outage.suffix)) {
      outage.left--;
      return req.respond({ status: 503, contentType: 'application/json',
        body: JSON.stringify({ error: 'database_unavailable', message: 'the database is unavailable' }) });
    }
    if (url.hostname === 'm.media-amazon.com') {
      const asin = (url.pathname.match(/\/([A-Z0-9]{10})\./) || [])[1] || '';
      if (/[02468]$/.test(asin)) {
        const hue = [...asin].reduce((s, c) => s + c.charCodeAt(0), 0) % 360;
        return req.respond({ status: 200, contentType: 'image/svg+xml', headers: { 'Cache-Control': 'max-age=3600' },
          body: `<svg xmlns="http://www.w3.org/2000/svg" width="500" height="500"><rect width="500" height="500" fill="hsl(${hue},55%,45%)"/><circle cx="250" cy="250" r="120" fill="#fff" opacity=".35"/></svg>` });
      }
      return req.respond({ status: 404, contentType: 'text/plain', body: 'no cover' });
    }
    if (url.protocol === 'http:' || url.protocol === 'https:') {
      if (url.hostname !== '127.0.0.1') return req.respond({ status: 204, body: '' });   // never the network
    }
    return req.continue();
  });
  return page;
}

// axe-core on the current page: the serious and critical violations, as readable lines.
export async function axe(page) {
  if (!(await page.evaluate(() => !!window.axe))) await page.evaluate(AXE);
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
}

export function shotsDir() {
  const dir = join(ROOT, 'build', 'screenshots');
  mkdirSync(dir, { recursive: true });
  return dir;
}

// Text of the elements matching sel, trimmed.
export function texts(page, sel) {
  return page.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));
}

// ---- the steps of a driver script (each one busted test, spec/support/browser.lua) ----

export class Failure extends Error {}
export function check(cond, message) { if (!cond) throw new Failure(message); }
export function equal(actual, expected, what) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Failure(`${what}: expected ${e}, got ${a}`);
}

// A step recorder: step(name, fn) runs fn and records {name, ok, ms, error} in steps.
// stopOnFailure: once a step failed, the later ones are recorded as not run (they build
// on each other).
export function stepper({ stopOnFailure = false } = {}) {
  const steps = [];
  let failed = false;
  async function step(name, fn) {
    if (failed) { steps.push({ name, ok: false, error: 'not run: an earlier step failed' }); return; }
    const t0 = Date.now();
    try {
      await fn();
      steps.push({ name, ok: true, ms: Date.now() - t0 });
    } catch (e) {
      failed = stopOnFailure;
      steps.push({ name, ok: false, ms: Date.now() - t0, error: e instanceof Failure ? e.message : (e.stack || String(e)) });
    }
  }
  return { steps, step };
}

// Waits until an element matching sel has text matching re.
export const waitText = (page, sel, re, timeout = 15000) => page.waitForFunction(
  (s, src, flags) => [...document.querySelectorAll(s)].some((e) => new RegExp(src, flags).test(e.textContent)),
  { timeout }, sel, re.source, re.flags);

// Waits until nothing on the page is loading (aria-busy, skeletons).
export async function settle(page) {
  await page.waitForFunction(() => !document.querySelector('[aria-busy="true"], .skeleton'), { timeout: 15000 });
}
