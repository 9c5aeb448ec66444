// History-API routing over routes.js: match(), navigate(), useLocation(). Plain <a href>
// links to app paths are followed without a reload (main.js listens for their clicks).
import { useState, useEffect } from './html.js';
import { routes } from './routes.js';

const compiled = routes.map((r) => {
  const names = [];
  const re = new RegExp('^' + r.path.replace(/:(\w+)/g, (_, n) => { names.push(n); return '([^/]+)'; }) + '/?$');
  return { route: r, re, names };
});

// {route, params} for a pathname, or null.
export function match(pathname) {
  for (const c of compiled) {
    const m = c.re.exec(pathname);
    if (m) {
      const params = {};
      c.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { route: c.route, params };
    }
  }
  return null;
}

const listeners = new Set();
function changed() { for (const fn of listeners) fn(); }
window.addEventListener('popstate', changed);
// The pages draw after their data arrives, later than the browser would restore a position;
// a page that wants its position back keeps it in history.state itself (the library does).
history.scrollRestoration = 'manual';

const leaving = new Set();
// fn() runs just before navigate() leaves the current entry: the last moment to write
// that entry's history.state. Answers the function that unregisters fn.
export function beforeLeave(fn) {
  leaving.add(fn);
  return () => leaving.delete(fn);
}

// Goes to url (path + query) on this site; replace: no new history entry.
export function navigate(url, { replace = false } = {}) {
  if (url === location.pathname + location.search) return;
  for (const fn of leaving) fn();
  history[replace ? 'replaceState' : 'pushState'](null, '', url);
  changed();
}

// {path, search, query: URLSearchParams}, re-rendered on every change.
export function useLocation() {
  const [, setTick] = useState(0);
  useEffect(() => {
    const fn = () => setTick((t) => t + 1);
    listeners.add(fn);
    return () => listeners.delete(fn);
  }, []);
  return { path: location.pathname, search: location.search, query: new URLSearchParams(location.search) };
}

// Links the router may follow itself: same origin, an app path, a plain left click.
export function routable(a, event) {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey ||
      event.shiftKey || event.altKey || a.target || a.hasAttribute('download')) return false;
  if (a.origin !== location.origin || (a.hash && a.pathname === location.pathname)) return false;
  return !/^\/(api|auth|healthz|metrics)(\/|$)/.test(a.pathname) && match(a.pathname) !== null;
}
