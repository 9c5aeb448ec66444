// A local stand-in for the Audnexus API (https://api.audnex.us) for shelfsync's specs and
// `make bench-enrich`: GET /books/:asin?region=xx answers the Audnexus book JSON shape.
// Plain node:http, no packages.
//
// Usage: node provider.mjs [--port N] [--latency-ms N] [--no-generate]
// Listens on 127.0.0.1 and prints one JSON line when ready: {"port":N,"url":"http://..."}.
//
// Books: one set with /control/book is answered as given; any other ASIN gets a generated
// book (deterministic, every field filled) unless --no-generate, then 404.
//
// Control endpoints (JSON in and out):
//   POST /control/book    {asin, book}            answer this book for asin (book: the JSON)
//   POST /control/fault   {asin, kind, times, retry_after, delay_ms}
//                         asin "*" applies to every ASIN without a fault of its own.
//                         kind: not_found (404) | rate_limit (429, Retry-After: retry_after,
//                         default 1) | server_error (500) | slow (answers after delay_ms) |
//                         malformed (200, broken JSON) | oversize (200, a 3 MB JSON body) |
//                         drop (the connection is closed without an answer) | none.
//                         times: how many requests it hits, then it is gone (default: all).
//   POST /control/latency {ms}                    every answer waits ms first
//   GET  /control/state   {requests: {asin: n}, total, regions: {asin: region}, max_in_flight}
//   POST /control/reset   forgets books, faults, counters; latency back to the start value
import { createServer } from 'node:http';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const startLatency = Number(opt('--latency-ms', '0'));
const generate = !args.includes('--no-generate');

let books, faults, requests, regions, total, latency, inFlight, maxInFlight;
function reset() {
  books = new Map();
  faults = new Map();
  requests = {};
  regions = {};
  total = 0;
  latency = startLatency;
  inFlight = 0;
  maxInFlight = 0;
}
reset();

function generated(asin, region) {
  let n = 0;
  for (const ch of asin) n = (n * 31 + ch.charCodeAt(0)) % 100000;
  return {
    asin,
    title: `Title ${asin}`,
    subtitle: `A Novel ${n % 97}`,
    authors: [{ asin: `B0AUTH${String(n % 20).padStart(4, '0')}`, name: `Author ${n % 20}` }],
    narrators: [{ name: `Narrator ${n % 15}` }],
    seriesPrimary: { asin: `B0SER${String(n % 10).padStart(5, '0')}`, name: `Series ${n % 10}`, position: String((n % 7) + 1) },
    runtimeLengthMin: 300 + (n % 50) * 7,
    image: `https://m.media-amazon.com/images/I/${asin}._SL500_.jpg`,
    summary: `<p>The story of <b>${asin}</b>.</p><p>Second &amp; last paragraph.</p>`,
    publisherName: 'Fake House',
    releaseDate: '2020-03-04T00:00:00.000Z',
    language: 'english',
    genres: [
      { asin: '18580606011', name: 'Science Fiction & Fantasy', type: 'genre' },
      { asin: '18580628011', name: 'Space Opera', type: 'tag' },
    ],
    rating: '4.5',
    region,
    formatType: 'unabridged',
  };
}

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch { resolve({}); } });
  });
}

function takeFault(asin) {
  const key = faults.has(asin) ? asin : (faults.has('*') ? '*' : null);
  if (!key) return null;
  const f = faults.get(key);
  if (f.times !== undefined && f.times !== null) {
    f.times -= 1;
    if (f.times <= 0) faults.delete(key);
  }
  return f.kind === 'none' ? null : f;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function book(req, res, asin, region) {
  requests[asin] = (requests[asin] || 0) + 1;
  regions[asin] = region;
  total += 1;
  inFlight += 1;
  if (inFlight > maxInFlight) maxInFlight = inFlight;
  try {
    if (latency > 0) await sleep(latency);
    const f = takeFault(asin);
    if (f) {
      switch (f.kind) {
        case 'not_found': return send(res, 404, { statusCode: 404, error: 'Not Found', message: 'Bad ASIN' });
        case 'rate_limit': return send(res, 429, { statusCode: 429, error: 'Too Many Requests' }, { 'Retry-After': String(f.retry_after ?? 1) });
        case 'server_error': return send(res, 500, { statusCode: 500, error: 'Internal Server Error' });
        case 'slow': await sleep(f.delay_ms ?? 5000); break;
        case 'malformed': return send(res, 200, `{"asin":"${asin}","title":"Broken`);
        case 'oversize': {
          const b = generated(asin, region);
          b.summary = 'x'.repeat(3 * 1024 * 1024);
          return send(res, 200, b);
        }
        case 'drop': req.socket.destroy(); return undefined;
        default: break;
      }
    }
    if (books.has(asin)) return send(res, 200, books.get(asin));
    if (generate) return send(res, 200, generated(asin, region));
    return send(res, 404, { statusCode: 404, error: 'Not Found', message: 'Bad ASIN' });
  } finally {
    inFlight -= 1;
  }
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  const m = url.pathname.match(/^\/books\/([A-Za-z0-9]+)$/);
  if (req.method === 'GET' && m) return book(req, res, m[1], url.searchParams.get('region') || 'us');
  if (req.method === 'GET' && url.pathname === '/control/state') {
    return send(res, 200, { requests, total, regions, max_in_flight: maxInFlight });
  }
  if (req.method === 'POST' && url.pathname.startsWith('/control/')) {
    const body = await readBody(req);
    switch (url.pathname) {
      case '/control/book': books.set(body.asin, body.book); return send(res, 200, { ok: true });
      case '/control/fault': faults.set(body.asin || '*', body); return send(res, 200, { ok: true });
      case '/control/latency': latency = Number(body.ms) || 0; return send(res, 200, { ok: true });
      case '/control/reset': reset(); return send(res, 200, { ok: true });
      default: break;
    }
  }
  return send(res, 404, { statusCode: 404, error: 'Not Found' });
});

server.keepAliveTimeout = 30000;
server.listen(Number(opt('--port', '0')), '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ port, url: `http://127.0.0.1:${port}` })}\n`);
});
