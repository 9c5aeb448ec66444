// /lists: my recommendation lists and tier lists, most recently changed first: cover strip,
// title, visibility, count, last change; create one (then its editor opens), rename, change
// who can see it, delete after a confirm that says what goes.
import { html, useState, useEffect, useRef } from '../html.js';
import { get, post, patch, del } from '../api.js';
import { navigate } from '../router.js';
import { ErrorText, plural, relTime, fullDate, setTitle } from '../ui.js';
import { Badge, CoverStrip, VisibilitySelect } from '../lists.js';

const KINDS = {
  list: { api: '/api/lists', page: '/lists/', noun: 'list', count: 'itemCount' },
  tier: { api: '/api/tierlists', page: '/tierlists/', noun: 'tier list', count: 'assignmentCount' },
};

// One card: the summary, with its actions. onChange(updated) / onGone().
export function ListCard({ s, kind, owner, onChange, onGone }) {
  const k = KINDS[kind];
  const [mode, setMode] = useState(null);      // null | 'rename' | 'delete'
  const [name, setName] = useState(s.title);
  const [error, setError] = useState(null);
  const count = s[k.count];
  const renameInput = useRef(null);
  useEffect(() => { if (mode === 'rename' && renameInput.current) renameInput.current.focus(); }, [mode]);
  async function run(fn) {
    setError(null);
    try { await fn(); } catch (e) { setError(e); }
  }
  const rename = (e) => {
    e.preventDefault();
    run(async () => { onChange(await patch(k.api + '/' + s.id, { title: name })); setMode(null); });
  };
  const lost = count > 0 ? `its ${plural(count, 'title')}${kind === 'list' ? ', their order and notes' : ' and their tiers'}` : 'it';
  return html`<li class="list-card">
    <a href=${k.page + s.id} class="list-card-link" tabindex="-1" aria-hidden="true"><${CoverStrip} covers=${s.covers} count=${count} /></a>
    <div class="list-card-body">
      <h3><a href=${k.page + s.id}>${s.title}</a></h3>
      <p class="list-card-meta">${owner && html`<${Badge} visibility=${s.visibility} />`}
        <span>${kind === 'tier' ? 'Tier list' : 'List'} · ${plural(count, 'title')}</span>
        <span class="muted"><time datetime=${s.updatedAt} title=${fullDate(s.updatedAt)}>${relTime(s.updatedAt)}</time></span></p>
      ${owner && mode === null && html`<div class="list-card-actions">
        <label class="vis"><span class="sr-only">Who can see ${s.title}</span>
          <${VisibilitySelect} value=${s.visibility} onChange=${(v) => run(async () => onChange(await patch(k.api + '/' + s.id, { visibility: v })))} /></label>
        <button type="button" class="btn small" onClick=${() => { setName(s.title); setMode('rename'); }}>Rename</button>
        <button type="button" class="btn small danger" onClick=${() => setMode('delete')}>Delete</button>
      </div>`}
      ${mode === 'rename' && html`<form class="rename" onSubmit=${rename}>
        <label><span class="sr-only">New title for ${s.title}</span><input value=${name} maxlength="200" required
          onInput=${(e) => setName(e.target.value)} ref=${renameInput} /></label>
        <button class="btn small primary" type="submit">Save</button>
        <button class="btn small" type="button" onClick=${() => setMode(null)}>Cancel</button>
      </form>`}
      ${mode === 'delete' && html`<div class="confirm" role="alertdialog" aria-label=${'Delete ' + s.title}>
        <p>Delete the ${k.noun} “${s.title}” and ${lost}? ${s.visibility !== 'PRIVATE' ? 'Its shared link stops working. ' : ''}The titles stay in your library.</p>
        <button type="button" class="btn small danger confirm-delete" onClick=${() => run(async () => { await del(k.api + '/' + s.id); onGone(); })}>Delete ${k.noun}</button>
        <button type="button" class="btn small" onClick=${() => setMode(null)}>Keep it</button>
      </div>`}
      <${ErrorText} error=${error} />
    </div>
  </li>`;
}

function Create() {
  const [title, setT] = useState('');
  const [kind, setKind] = useState('list');
  const [error, setError] = useState(null);
  async function submit(e) {
    e.preventDefault();
    try {
      const made = await post(KINDS[kind].api, { title: title.trim() });
      navigate(KINDS[kind].page + made.id);
    } catch (err) { setError(err); }
  }
  return html`<form class="create card" onSubmit=${submit}>
    <h2>New list</h2>
    <div class="create-row">
      <label class="grow">Title<input name="title" value=${title} maxlength="200" required placeholder="Best first-listen fantasy"
        onInput=${(e) => setT(e.target.value)} /></label>
      <label>Kind<select name="kind" value=${kind} onChange=${(e) => setKind(e.target.value)}>
        <option value="list">Recommendation list</option><option value="tier">Tier list</option></select></label>
      <button type="submit" class="btn primary">Create</button>
    </div>
    <${ErrorText} error=${error} />
  </form>`;
}

export default function Lists() {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setTitle('Lists');
    Promise.all([get('/api/lists'), get('/api/tierlists')])
      .then(([l, t]) => setData([...l.lists.map((s) => ({ s, kind: 'list' })), ...t.tierLists.map((s) => ({ s, kind: 'tier' }))]
        .sort((a, b) => (a.s.updatedAt < b.s.updatedAt ? 1 : -1))), setError);
  }, []);
  const replace = (id, s) => setData(data.map((x) => (x.s.id === id ? { ...x, s: { ...x.s, ...s } } : x)));
  return html`<main id="main" class="page lists-page">
    <h1>Your lists</h1>
    <${Create} />
    <${ErrorText} error=${error} />
    ${data == null && !error && html`<ul class="list-cards" aria-hidden="true">${[1, 2, 3].map(() => html`<li class="list-card skeleton"><div class="strip"></div></li>`)}</ul>`}
    ${data && data.length === 0 && html`<p class="empty">No lists yet. A recommendation list is titles in your order with a note each;
      a tier list ranks them S to F. Create one above, then add titles from your library.</p>`}
    ${data && data.length > 0 && html`<ul class="list-cards">${data.map(({ s, kind }) => html`<${ListCard} key=${s.id} s=${s} kind=${kind} owner=${true}
      onChange=${(u) => replace(s.id, u)} onGone=${() => setData(data.filter((x) => x.s.id !== s.id))} />`)}</ul>`}
  </main>`;
}
