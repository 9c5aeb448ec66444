// /settings: who you are (from the sign-in provider), your public handle and whether your
// profile is public (PUT /api/users/me/username), and sign out.
import { html, useState, useEffect } from '../html.js';
import { put, post } from '../api.js';
import { navigate } from '../router.js';
import { loadMe, forgetMe } from '../session.js';
import { ErrorText, setTitle } from '../ui.js';

export default function Settings({ me }) {
  const profile = me.profile || { username: null, visibility: 'PRIVATE' };
  const [username, setUsername] = useState(profile.username || '');
  const [saved, setSaved] = useState(profile);
  const [visibility, setVisibility] = useState(profile.visibility);
  const [error, setError] = useState(null);
  const [visError, setVisError] = useState(null);
  const [outError, setOutError] = useState(null);
  const [notice, setNotice] = useState('');
  const [busy, setBusy] = useState(false);
  useEffect(() => { setTitle('Settings'); }, []);

  async function claim(e) {
    e.preventDefault();
    setBusy(true); setError(null); setNotice('');
    try {
      const r = await put('/api/users/me/username', { username: username.trim() });
      setSaved({ username: r.username, visibility: r.profileVisibility });
      setVisibility(r.profileVisibility);
      setNotice(`Your handle is now @${r.username}.`);
      loadMe(true);
    } catch (err) { setError(err); }
    setBusy(false);
  }

  async function changeVisibility(v) {
    setVisError(null);
    const before = visibility;
    setVisibility(v);
    try {
      const r = await put('/api/users/me/username', { username: saved.username, profileVisibility: v });
      setSaved({ username: r.username, visibility: r.profileVisibility });
      loadMe(true);
    } catch (err) { setVisibility(before); setVisError(err); }
  }

  async function signOut() {
    setOutError(null);
    try { await post('/auth/logout'); forgetMe(); navigate('/'); } catch (err) { setOutError(err); }
  }

  return html`<main id="main" class="page narrow settings">
    <h1>Settings</h1>
    <section class="card" aria-labelledby="acc-h"><h2 id="acc-h">Account</h2>
      <dl class="fields">
        <div class="field"><dt>Name</dt><dd>${me.user.name || html`<span class="muted">not set</span>`}</dd></div>
        <div class="field"><dt>Email</dt><dd>${me.user.email}</dd></div>
      </dl>
      <p class="muted small">Your name and email come from your sign-in account and are never shown to others.</p>
    </section>
    <section class="card" aria-labelledby="handle-h"><h2 id="handle-h">Public handle</h2>
      <p>Your handle is the address of your public profile, where your public lists appear${saved.username ? html`: <a href=${'/u/' + saved.username}>/u/${saved.username}</a>` : ''}.</p>
      <form class="inline-form" onSubmit=${claim}>
        <label for="username">Handle</label>
        <div class="input-row">
          <span class="prefix" aria-hidden="true">@</span>
          <input id="username" name="username" value=${username} autocomplete="off" spellcheck="false"
            aria-describedby="username-rules${error ? ' username-error' : ''}" aria-invalid=${error ? 'true' : undefined}
            onInput=${(e) => setUsername(e.target.value)} required />
          <button type="submit" class="btn primary" disabled=${busy}>${saved.username ? 'Change' : 'Claim'}</button>
        </div>
        <p id="username-rules" class="muted small">3 to 30 letters, digits or underscores.</p>
        <${ErrorText} error=${error} id="username-error" />
        <p class="success" aria-live="polite">${notice}</p>
      </form>
    </section>
    <section class="card" aria-labelledby="vis-h"><h2 id="vis-h">Profile visibility</h2>
      ${saved.username ? html`<fieldset class="radios"><legend class="sr-only">Who can see your profile</legend>
        <label><input type="radio" name="visibility" value="PUBLIC" checked=${visibility === 'PUBLIC'}
          onChange=${() => changeVisibility('PUBLIC')} /> Public: anyone with the link sees your public lists</label>
        <label><input type="radio" name="visibility" value="PRIVATE" checked=${visibility === 'PRIVATE'}
          onChange=${() => changeVisibility('PRIVATE')} /> Private: your profile page is hidden</label>
      </fieldset><${ErrorText} error=${visError} />`
        : html`<p class="muted">Claim a handle first: a profile exists only under a handle.</p>`}
    </section>
    <section class="card" aria-labelledby="out-h"><h2 id="out-h">Sign out</h2>
      <p>Sign out of shelfsync in this browser.</p>
      <button type="button" class="btn" onClick=${signOut}>Sign out</button>
      <${ErrorText} error=${outError} />
    </section>
  </main>`;
}
