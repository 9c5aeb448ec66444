// The JSON API client. Every call goes through request(): it answers the parsed JSON or
// throws an ApiError carrying the API's {error, message, details}. A 503 (the database is
// down) does not throw: the banner shows, and the request is tried again until it passes;
// a 503 with another code (provider_unavailable) throws like any error.
// A 401 on a page that needs a session sends the visitor to sign in (router.js).

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `The server answered ${status}.`);
    this.status = status;
    this.code = (body && body.error) || 'http_' + status;
    this.details = (body && body.details) || [];
  }
}

// One listener for the banner (main.js): fn({retrying, retryNow}) or fn(null) when well.
let bannerListener = () => {};
export function onOutage(fn) { bannerListener = fn; }

let unauthorized = () => {};
export function onUnauthorized(fn) { unauthorized = fn; }

const RETRY_MS = [1000, 2000, 4000, 8000, 15000];

function wait(ms) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    bannerListener({ retryNow: () => { clearTimeout(t); resolve(); } });
  });
}

export async function request(method, path, body, headers) {
  const opts = { method, headers: { Accept: 'application/json', ...headers }, credentials: 'same-origin' };
  if (body instanceof Blob) {           // a file, sent as it is (POST /api/import)
    opts.headers['Content-Type'] = body.type || 'application/octet-stream';
    opts.body = body;
  } else if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  for (let attempt = 0; ; attempt++) {
    let res;
    try {
      res = await fetch(path, opts);
    } catch (e) {
      throw new ApiError(0, { error: 'network', message: 'Could not reach shelfsync. Check your connection and try again.' });
    }
    const text = res.status === 204 ? '' : await res.text();
    let json = null;
    if (text) { try { json = JSON.parse(text); } catch (e) { json = null; } }
    // Only the database's 503 is the outage the banner is for; another service's
    // (provider_unavailable: the metadata provider) is the action's own error.
    if (res.status === 503 && !(json && json.error && json.error !== 'database_unavailable')) {
      await wait(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
      continue;
    }
    bannerListener(null);
    if (res.ok) return json;
    if (res.status === 401 && !path.startsWith('/auth/')) unauthorized();
    throw new ApiError(res.status, json);
  }
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);
export const put = (path, body) => request('PUT', path, body);
export const del = (path) => request('DELETE', path);
// A write of the version read: the API answers 412 (ApiError status 412) when the resource
// changed since.
export const patchIf = (path, body, version) => request('PATCH', path, body, { 'If-Match': `"${version}"` });
export const patch = (path, body) => request('PATCH', path, body);
export const upload = (path, file) => request('POST', path, file);

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? '?' + s : '';
}
