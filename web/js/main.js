// The app shell: top bar, outage banner, and the page of the current route.
import { html, render, useState, useEffect, useRef } from './html.js';
import { routes } from './routes.js';
import { match, navigate, useLocation, routable } from './router.js';
import { onOutage, onUnauthorized, post } from './api.js';
import { loadMe, forgetMe } from './session.js';
import { Brand, ErrorText, initials } from './ui.js';

const pages = new Map();        // route -> loaded page component

// A signed-out visitor (or an expired session) on a page that needs one goes to sign in,
// with the way back. Both the first /api/me and any later 401 come here; once on the
// (public) sign-in page, nothing more happens.
function toSignIn() {
  const m = match(location.pathname);
  if (m && m.route.public) return;
  forgetMe();
  navigate('/?next=' + encodeURIComponent(location.pathname + location.search), { replace: true });
}
onUnauthorized(toSignIn);

function Banner() {
  const [outage, setOutage] = useState(null);
  useEffect(() => onOutage(setOutage), []);
  if (!outage) return null;
  return html`<div class="banner" role="alert">
    <span>shelfsync can't reach its database right now. Retrying…</span>
    <button type="button" class="btn small" onClick=${() => outage.retryNow()}>Retry now</button>
  </div>`;
}

function TopBar({ me, path }) {
  const [open, setOpen] = useState(false);
  const [error, setError] = useState(null);
  const menu = useRef(null);
  useEffect(() => {
    if (!open) return undefined;
    const first = menu.current && menu.current.querySelector('.menu-panel a');
    if (first) first.focus();
    const close = (e) => { if (!menu.current || !menu.current.contains(e.target)) setOpen(false); };
    const esc = (e) => { if (e.key === 'Escape') setOpen(false); };
    document.addEventListener('click', close);
    document.addEventListener('keydown', esc);
    return () => { document.removeEventListener('click', close); document.removeEventListener('keydown', esc); };
  }, [open]);
  async function signOut() {
    try {
      await post('/auth/logout');
      forgetMe();
      navigate('/');
    } catch (e) { setError(e); }
  }
  const name = (me.user.name || me.user.email);
  return html`<header class="topbar">
    <${Brand} href="/dashboard" />
    <nav aria-label="Main">
      ${routes.filter((r) => r.nav).map((r) => html`<a href=${r.path}
        aria-current=${path === r.path || path.startsWith(r.path + '/') || (r.path === '/lists' && path.startsWith('/tierlists/')) ? 'page' : undefined}>${r.nav}</a>`)}
    </nav>
    <div class="menu" ref=${menu}>
      <button type="button" class="avatar" aria-haspopup="true" aria-expanded=${open}
        onClick=${() => setOpen(!open)}><span aria-hidden="true">${initials(name)}</span><span class="sr-only">Account menu</span></button>
      ${open && html`<div class="menu-panel">
        <p class="menu-name">${name}</p>
        <a href="/settings" onClick=${() => setOpen(false)}>Settings</a>
        <button type="button" onClick=${signOut}>Sign out</button>
        <${ErrorText} error=${error} />
      </div>`}
    </div>
  </header>`;
}

// Signed out on a shared page (a list, a profile): the name, and the way to sign in.
function PublicBar() {
  return html`<header class="topbar">
    <${Brand} href="/" />
    <span class="grow"></span>
    <a class="btn small" href=${'/?next=' + encodeURIComponent(location.pathname)}>Sign in</a>
  </header>`;
}

function App() {
  const loc = useLocation();
  const m = match(loc.path);
  const [state, setState] = useState({ key: null });
  const key = loc.path;

  useEffect(() => {
    let live = true;
    (async () => {
      if (!m) { setState({ key, notFound: true }); return; }
      try {
        const [Page, me] = await Promise.all([
          pages.get(m.route) || m.route.load().then((mod) => { pages.set(m.route, mod.default); return mod.default; }),
          loadMe(),
        ]);
        if (!live) return;
        if (!me && !m.route.public) { toSignIn(); return; }
        setState({ key, Page, me, params: m.params, route: m.route });
      } catch (e) {
        if (live) setState({ key, error: e });
      }
    })();
    return () => { live = false; };
  }, [key]);

  // A new page: its heading takes the focus, so keyboard and screen-reader users start there.
  useEffect(() => {
    if (state.key == null) return;
    const h1 = document.querySelector('main h1');
    if (h1 && document.activeElement === document.body) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
    window.scrollTo(0, 0);
  }, [state.key]);

  let body;
  if (state.notFound) {
    body = html`<main id="main" class="page narrow"><h1>Page not found</h1>
      <p>There is nothing at this address. <a href="/library">Open your library</a>.</p></main>`;
  } else if (state.error) {
    body = html`<main id="main" class="page narrow"><h1>Something went wrong</h1><${ErrorText} error=${state.error} />
      <button type="button" class="btn" onClick=${() => location.reload()}>Reload</button></main>`;
  } else if (state.Page) {
    body = html`<${state.Page} key=${state.key} params=${state.params} query=${loc.query} me=${state.me} />`;
  } else {
    body = html`<main id="main" class="page" aria-busy="true"><p class="muted">Loading…</p></main>`;
  }
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <${Banner} />
    ${state.me ? html`<${TopBar} me=${state.me} path=${loc.path} />`
      : state.route && state.route.path !== '/' && html`<${PublicBar} />`}
    ${body}`;
}

document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[href]');
  if (a && routable(a, e)) {
    e.preventDefault();
    navigate(a.pathname + a.search);
  }
});

// The boot text goes first: Preact would keep it beside the app's own nodes.
const root = document.getElementById('app');
root.textContent = '';
render(html`<${App} />`, root);
