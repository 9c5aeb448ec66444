// /library/:asin: one title of the library with every catalog field, the listener's
// progress and rating, and the lists holding it. The summary is untrusted text: it is
// rendered as text (Preact escapes it), paragraphs split on blank lines.
import { html, useState, useEffect } from '../html.js';
import { get } from '../api.js';
import { Cover, ErrorText, duration, num, setTitle } from '../ui.js';

const lib = (k, v) => '/library?' + new URLSearchParams({ [k]: v });

function Links({ list, param }) {
  return list.map((v, i) => html`${i > 0 ? ', ' : ''}<a href=${lib(param, v)}>${v}</a>`);
}

function Field({ label, children }) {
  if (children == null || children === '' || (Array.isArray(children) && !children.length)) return null;
  return html`<div class="field"><dt>${label}</dt><dd>${children}</dd></div>`;
}

function Stars({ value, label }) {
  if (value == null) return null;
  const full = Math.round(value);
  return html`<span class="stars" role="img" aria-label=${label}>${'★'.repeat(full)}${'☆'.repeat(Math.max(0, 5 - full))}</span>`;
}

const LANG = new Intl.DisplayNames(['en'], { type: 'language' });
function language(code) {
  if (!code) return null;
  try { return LANG.of(code) || code; } catch (e) { return code; }
}

export default function Title({ params }) {
  const [e, setE] = useState(null);
  const [lists, setLists] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setTitle('Title');
    get('/api/library/' + encodeURIComponent(params.asin)).then((x) => { setE(x); setTitle(x.title.title); }, setError);
    get('/api/library/' + encodeURIComponent(params.asin) + '/lists').then(setLists, () => setLists(null));
  }, [params.asin]);

  if (error) {
    return html`<main id="main" class="page narrow"><h1>${error.status === 404 ? 'Not in your library' : 'Could not load this title'}</h1>
      <${ErrorText} error=${error} /><p><a href="/library">Back to your library</a></p></main>`;
  }
  if (!e) return html`<main id="main" class="page" aria-busy="true"><h1 class="sr-only">Loading title</h1><div class="title-skeleton"></div></main>`;
  const t = e.title;
  const paragraphs = (t.summary || '').split(/\n\s*\n/).map((s) => s.trim()).filter(Boolean);
  const status = e.listeningProgress >= 100 ? 'Finished' : e.listeningProgress > 0 ? `${e.listeningProgress}% listened` : 'Not started';
  const held = lists ? lists.lists.length + lists.tierLists.length : 0;
  return html`<main id="main" class="page title-page">
    <p class="crumb"><a href=${e.source === 'WISHLIST' ? '/library?source=WISHLIST' : '/library'}>← ${e.source === 'WISHLIST' ? 'Wishlist' : 'Library'}</a></p>
    <div class="title-layout">
      <div class="title-cover"><${Cover} asin=${e.asin} title=${t.title} url=${t.coverImageUrl} eager=${true} size="large" /></div>
      <div class="title-info">
        <h1>${t.title}</h1>
        ${t.subtitle && html`<p class="subtitle">${t.subtitle}</p>`}
        ${t.authors.length > 0 && html`<p class="by">by <${Links} list=${t.authors} param="author" /></p>`}
        <div class="mine card">
          <div><span class="mine-label">Your progress</span><strong class="mine-status">${status}</strong>
            <div class="progress big" aria-hidden="true"><span style=${{ width: Math.min(100, e.listeningProgress) + '%' }}></span></div></div>
          <div><span class="mine-label">Your rating</span>${e.personalRating
            ? html`<${Stars} value=${e.personalRating} label=${e.personalRating + ' of 5 stars'} />`
            : html`<span class="muted">Not rated</span>`}</div>
        </div>
        <dl class="fields">
          <${Field} label="Narrated by">${t.narrators.length ? html`<${Links} list=${t.narrators} param="narrator" />` : null}<//>
          <${Field} label="Series">${t.seriesName ? html`<a href=${lib('series', t.seriesName)}>${t.seriesName}</a>${t.seriesPosition != null ? ', book ' + t.seriesPosition : ''}` : null}<//>
          <${Field} label="Length">${duration(t.duration)}<//>
          <${Field} label="Released">${t.releaseDate}<//>
          <${Field} label="Publisher">${t.publisher}<//>
          <${Field} label="Language">${t.language ? html`<a href=${lib('language', t.language)}>${language(t.language)}</a>` : null}<//>
          <${Field} label="Categories">${t.categories.length ? html`<${Links} list=${t.categories} param="category" />` : null}<//>
          <${Field} label="Rating">${t.rating != null ? html`<${Stars} value=${t.rating} label=${t.rating + ' of 5 stars'} /> ${t.rating}${t.ratingCount ? ` (${num(t.ratingCount)} ratings)` : ''}` : null}<//>
          <${Field} label="Added">${new Date(e.dateAdded).toLocaleDateString('en', { dateStyle: 'medium' })}<//>
          <${Field} label="ASIN">${e.asin}<//>
        </dl>
        ${paragraphs.length > 0 && html`<section class="summary" aria-labelledby="sum-h"><h2 id="sum-h">Summary</h2>
          ${paragraphs.map((s) => html`<p>${s}</p>`)}</section>`}
        <section class="in-lists" aria-labelledby="lists-h"><h2 id="lists-h">In your lists</h2>
          ${lists == null ? html`<p class="muted">…</p>` : held === 0 ? html`<p class="muted">Not in any of your lists yet.</p>`
            : html`<ul>${lists.lists.map((l) => html`<li><a href=${'/lists/' + l.id}>${l.title}</a> <span class="muted">#${l.position}</span></li>`)}
              ${lists.tierLists.map((l) => html`<li><a href=${'/tierlists/' + l.id}>${l.title}</a> <span class="muted">tier ${l.tier}</span></li>`)}</ul>`}
        </section>
      </div>
    </div>
  </main>`;
}
