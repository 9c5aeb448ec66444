// /: what shelfsync is, and the ways to sign in this server offers (GET /auth/providers).
// ?next=/path is where a visitor sent here to sign in goes back to.
import { html, useState, useEffect } from '../html.js';
import { get, post } from '../api.js';
import { navigate } from '../router.js';
import { loadMe } from '../session.js';
import { Brand, ErrorText, setTitle } from '../ui.js';

function safeNext(query) {
  const next = query.get('next') || '';
  return /^\/(?!\/)/.test(next) ? next : '/dashboard';
}

function DevLogin({ next }) {
  const [email, setEmail] = useState('');
  const [name, setName] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await post('/auth/dev/login', { email, name: name || undefined });
      await loadMe(true);
      navigate(next);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  }
  return html`<form class="card devlogin" onSubmit=${submit} aria-describedby="dev-note">
    <h2>Dev login</h2>
    <p id="dev-note" class="muted">This server has dev login on: sign in with any email, no password.</p>
    <label>Email<input type="email" name="email" required autocomplete="email" value=${email}
      onInput=${(e) => setEmail(e.target.value)} /></label>
    <label><span>Name <span class="muted">(optional)</span></span><input type="text" name="name" autocomplete="name" value=${name}
      onInput=${(e) => setName(e.target.value)} /></label>
    <button type="submit" class="btn primary" disabled=${busy}>Sign in</button>
    <${ErrorText} error=${error} />
  </form>`;
}

export default function Home({ query, me }) {
  const next = safeNext(query);
  const [providers, setProviders] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setTitle('');
    get('/auth/providers').then(setProviders, setError);
  }, []);
  const googleHref = '/auth/google/login?returnTo=' + encodeURIComponent(next);
  return html`${!me && html`<header class="topbar plain"><${Brand} href="/" /></header>`}
  <main id="main" class="page home">
    <section class="hero">
      <h1>Your audiobook shelf, in one place</h1>
      <p class="lede">shelfsync keeps a copy of your Audible library and wishlist: browse it as a wall of covers,
        find any title in two keystrokes, see what you've listened to, and share lists with friends.</p>
      ${me ? html`<p><a class="btn primary" href=${next}>Open your shelf</a></p>` : html`
        ${query.get('next') && html`<p class="notice">Sign in to continue to <strong>${next}</strong>.</p>`}
        <div class="signin">
          ${providers && providers.google && html`<a class="btn primary" href=${googleHref}>Sign in with Google</a>`}
          ${providers && !providers.google && !providers.devLogin &&
            html`<p class="muted">Sign-in is not configured on this server yet.</p>`}
          ${providers && providers.devLogin && html`<${DevLogin} next=${next} />`}
          <${ErrorText} error=${error} />
        </div>`}
    </section>
    <section class="features" aria-label="What you get">
      <div><h2>Sync in one click</h2><p>The shelfsync extension reads your Audible library while you are signed in there and sends it here.</p></div>
      <div><h2>Find anything</h2><p>Search by title, author, narrator or series, even with a typo; filter and sort thousands of titles.</p></div>
      <div><h2>See your listening</h2><p>Hours, finished titles, favourite authors and how far you are in every series.</p></div>
    </section>
  </main>`;
}
