// /library: the cover grid (or a compact list) of the library or the wishlist, with search,
// filters, sorts and infinite scroll over the API's keyset cursor. The URL holds the view:
// its parameters are the API's own (source, q, author, narrator, series, category,
// language, progress, sort, order) plus view=list, so a view can be bookmarked and Back
// restores it. Back also brings the listener to where they were: the view's history entry
// keeps how many entries were loaded and which card was at what height (history.state),
// and the page reads that many again and scrolls the card back there.
import { html, useState, useEffect, useRef } from '../html.js';
import { get, query as qs } from '../api.js';
import { navigate, beforeLeave } from '../router.js';
import { Cover, ErrorText, Progress, byline, duration, num, plural, setTitle } from '../ui.js';
import { AddByAsin, Pending } from '../enrichment.js';

const PAGE = 48;
const MOST = 200;             // the API's largest page
const DEBOUNCE_MS = 250;
const FILTERS = [
  ['author', 'Author', 'authors'], ['narrator', 'Narrator', 'narrators'], ['series', 'Series', 'series'],
  ['category', 'Category', 'categories'], ['language', 'Language', 'languages'],
];
// Status filters: progress (the Status select) and finished, which only older bookmarks carry.
const STATUS_KEYS = ['progress', 'finished'];
const FILTER_KEYS = [...FILTERS.map(([k]) => k), ...STATUS_KEYS];
const API_KEYS = ['source', 'q', ...FILTER_KEYS, 'sort', 'order'];
const STATUSES = [['finished', 'Finished'], ['in_progress', 'In progress'], ['not_started', 'Not started']];
const SORTS = [
  ['relevance', 'Best match', 'desc'], ['dateAdded', 'Date added', 'desc'], ['title', 'Title', 'asc'],
  ['author', 'Author', 'asc'], ['series', 'Series order', 'asc'], ['releaseDate', 'Release date', 'desc'],
  ['rating', 'Rating', 'desc'], ['duration', 'Length', 'asc'], ['progress', 'Progress', 'desc'],
];
const DEFAULT_ORDER = Object.fromEntries(SORTS.map(([k, , o]) => [k, o]));

function readParams(query) {
  const p = {};
  for (const k of [...API_KEYS, 'view']) { const v = query.get(k); if (v) p[k] = v; }
  return p;
}

// The URL of the view p (keys in a fixed order, so equal views have equal URLs).
function urlOf(p) {
  return '/library' + qs(Object.fromEntries([...API_KEYS, 'view'].map((k) => [k, p[k]])));
}

function apiParams(p) {
  const a = {};
  for (const k of API_KEYS) if (p[k]) a[k] = p[k];
  a.source = a.source || 'LIBRARY,MANUAL';     // the Library tab: synced and added by hand
  return a;
}

// The first n entries of the view (at least a page), following the cursor in pages of up to MOST.
async function readFirst(api, n) {
  let items = [], cursor = null, total = 0;
  do {
    const r = await get('/api/library' + qs({ ...api, limit: Math.min(MOST, Math.max(PAGE, n) - items.length), cursor }));
    if (!cursor) total = r.total;
    items = items.concat(r.items);
    cursor = r.nextCursor;
  } while (cursor && items.length < n);
  return { items, cursor, total };
}

// The first card on screen and its height in the window: the place to come back to.
function anchor() {
  for (const el of document.querySelectorAll('main [data-asin]')) {
    const r = el.getBoundingClientRect();
    if (r.bottom > 0) return { asin: el.dataset.asin, offset: r.top };
  }
  return {};
}

function GridCard({ e, eager }) {
  const t = e.title;
  return html`<li class="tile" data-asin=${e.asin}>
    <a href=${'/library/' + e.asin} class="tile-link">
      <div class="tile-cover">
        <${Cover} asin=${e.asin} title=${t.title} url=${t.coverImageUrl} eager=${eager} />
        ${e.listeningProgress >= 100 && html`<span class="check" title="Finished" aria-label="Finished">✓</span>`}
        <${Progress} value=${e.listeningProgress < 100 ? e.listeningProgress : 0} />
      </div>
      <span class="tile-title">${t.title}</span>
    </a>
    <span class="tile-author">${byline(t.authors) || '\u00a0'}</span>
  </li>`;
}

function ListRow({ e }) {
  const t = e.title;
  return html`<li class="row" data-asin=${e.asin}>
    <${Cover} asin=${e.asin} title=${t.title} url=${t.coverImageUrl} size="small" />
    <div class="row-main">
      <a href=${'/library/' + e.asin} class="row-title">${t.title}</a>
      <span class="row-sub">${byline(t.authors)}${t.seriesName ? ' · ' + t.seriesName + (t.seriesPosition != null ? ' #' + t.seriesPosition : '') : ''}</span>
    </div>
    <span class="row-meta">${duration(t.duration) || ''}</span>
    <span class="row-meta">${e.listeningProgress >= 100 ? 'Finished' : e.listeningProgress > 0 ? e.listeningProgress + '%' : ''}</span>
  </li>`;
}

function Skeleton({ list }) {
  return html`<ul class=${list ? 'rows' : 'grid'} aria-hidden="true">${Array.from({ length: 12 }, () =>
    list ? html`<li class="row skeleton"><div class="cover small"></div></li>`
      : html`<li class="tile skeleton"><div class="cover"></div><span class="bar"></span><span class="bar short"></span></li>`)}</ul>`;
}

function Filters({ p, facets, set, open }) {
  const value = (k) => p[k] || '';
  const active = FILTER_KEYS.some((k) => p[k]);
  return html`<div class=${'filters' + (open ? ' open' : '')} id="filters">
    ${FILTERS.map(([k, label, fk]) => {
      const list = (facets && facets[fk]) || [];
      const has = !p[k] || list.some((f) => f.name === p[k]);
      return html`<label class="filter">${label}
        <select name=${k} value=${value(k)} onChange=${(e) => set({ [k]: e.target.value })}>
          <option value="">Any</option>
          ${!has && html`<option value=${p[k]}>${p[k]}</option>`}
          ${list.map((f) => html`<option value=${f.name}>${f.name} (${num(f.count)})</option>`)}
        </select></label>`;
    })}
    <label class="filter">Status
      <select name="progress" value=${value('progress')} onChange=${(e) => set({ progress: e.target.value, finished: '' })}>
        <option value="">Any</option>
        ${STATUSES.map(([v, label]) => html`<option value=${v}>${label}</option>`)}
      </select></label>
    ${active && html`<button type="button" class="btn small clear" onClick=${() =>
      set(Object.fromEntries(FILTER_KEYS.map((k) => [k, ''])))}>Clear filters</button>`}
  </div>`;
}

export default function Library({ query, me }) {
  const p = readParams(query);
  const api = apiParams(p);
  const key = qs(api);
  const facetKey = qs({ ...api, sort: undefined, order: undefined, limit: 100 });
  const list = p.view === 'list';
  const wishlist = api.source === 'WISHLIST';

  const [page, setPage] = useState({ key: null, items: [], cursor: null, total: 0 });
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState(null);
  const [facets, setFacets] = useState(null);
  const [text, setText] = useState(p.q || '');
  const [filtersOpen, setFiltersOpen] = useState(false);
  const [tick, setTick] = useState(0);       // bumped to read the view again (details arrived, a title added)
  const seq = useRef(0);
  const debounce = useRef(null);
  const sentinel = useRef(null);
  const pageRef = useRef(page);
  pageRef.current = page;
  const readKey = useRef(null);      // the view the first-page effect last read
  const restore = useRef(null);      // a saved place to scroll back to, once its entries are drawn
  const search = query.toString();
  // Where the listener is in this view: how many entries, and the card on screen at its height.
  const place = () => ({ key, count: pageRef.current.items.length, y: window.scrollY, ...anchor() });
  // This view's place, written into its history entry (guarded: the URL may already be another's).
  const save = useRef(null);
  save.current = () => {
    if (pageRef.current.key !== key || restore.current || location.pathname !== '/library' ||
        new URLSearchParams(location.search).toString() !== search) return;
    history.replaceState({ ...history.state, library: place() }, '');
  };

  // Any change but the search text is a new history entry; typing replaces the current one.
  function set(change, replace = false) {
    const next = { ...p, ...change };
    if ('sort' in change && !('order' in change)) next.order = '';
    navigate(urlOf(next), { replace });
  }

  useEffect(() => { setTitle(wishlist ? 'Wishlist' : 'Library'); }, [wishlist]);

  // First page of every new view; coming back to a view with a saved place (Back, Forward,
  // reload), as many entries as were loaded there. The same view read again (details arrived
  // while the enrichment runs, a title added) keeps what the listener sees: as many entries
  // as are loaded, and the card on screen where it is.
  useEffect(() => {
    const mine = ++seq.current;
    const again = readKey.current === key;
    const saved = !again && history.state && history.state.library;
    const back = saved && saved.key === key ? saved : null;
    const count = again ? pageRef.current.items.length : back ? back.count : PAGE;
    readKey.current = key;
    setLoading(true);
    setError(null);
    if (!again) performance.mark('library:query');
    readFirst(api, count).then((r) => {
      if (mine !== seq.current) return;
      // (the place taken now, not when the read left: the listener may have scrolled since)
      restore.current = again ? place() : back;
      setPage({ key, ...r });
      setLoading(false);
    }, (e) => { if (mine === seq.current) { setError(e); setLoading(false); } });
  }, [key, tick]);

  // The saved place, once drawn: its card at its height again (else the same scroll offset).
  useEffect(() => {
    const back = restore.current;
    if (!back || page.key !== key) return;
    restore.current = null;
    const el = back.asin && document.querySelector(`main [data-asin="${CSS.escape(back.asin)}"]`);
    window.scrollTo(0, el ? el.getBoundingClientRect().top + window.scrollY - back.offset : back.y);
  }, [page]);

  // The place is saved when more entries arrive, when scrolling stops, and when leaving by a link.
  useEffect(() => { save.current(); }, [page]);
  useEffect(() => {
    let t;
    const onScroll = () => { clearTimeout(t); t = setTimeout(() => save.current(), 150); };
    window.addEventListener('scroll', onScroll, { passive: true });
    const off = beforeLeave(() => save.current());
    return () => { clearTimeout(t); window.removeEventListener('scroll', onScroll); off(); };
  }, []);

  // For make bench-web: a new view's first page is on screen (the frame after it rendered).
  useEffect(() => {
    if (page.key === key) requestAnimationFrame(() => setTimeout(() => performance.mark('library:drawn')));
  }, [page.key]);

  // The filters' values, once the grid is drawn: the two queries would share the cores, and
  // the grid is what the listener is waiting for.
  const gridReady = page.key === key;
  const facetsFor = useRef(null);
  useEffect(() => {
    if (!gridReady || facetsFor.current === facetKey) return;
    facetsFor.current = facetKey;
    get('/api/library/facets' + facetKey).then((f) => { if (facetsFor.current === facetKey) setFacets(f); }, () => {});
  }, [facetKey, gridReady]);

  // Back/forward to another q: the box shows it.
  useEffect(() => { if ((p.q || '') !== text.trim()) setText(p.q || ''); }, [p.q]);

  function onSearch(e) {
    const v = e.target.value;
    setText(v);
    clearTimeout(debounce.current);
    debounce.current = setTimeout(() => set({ q: v.trim(), sort: p.sort === 'relevance' && !v.trim() ? '' : p.sort }, true), DEBOUNCE_MS);
  }

  function loadMore() {
    const cur = pageRef.current;
    if (!cur.cursor || loading || cur.key !== key) return;
    const mine = seq.current;
    setLoading(true);
    get('/api/library' + qs({ ...api, limit: PAGE, cursor: cur.cursor })).then((r) => {
      if (mine !== seq.current) return;
      setPage((prev) => ({ ...prev, items: prev.items.concat(r.items), cursor: r.nextCursor }));
      setLoading(false);
    }, (e) => { if (mine === seq.current) { setError(e); setLoading(false); } });
  }

  useEffect(() => {
    const el = sentinel.current;
    if (!el) return undefined;
    const io = new IntersectionObserver((entries) => { if (entries[0].isIntersecting) loadMore(); }, { rootMargin: '600px' });
    io.observe(el);
    return () => io.disconnect();
  });

  const sort = p.sort || (p.q ? 'relevance' : 'dateAdded');
  const order = p.order || DEFAULT_ORDER[sort];
  const ready = page.key === key;
  const items = ready ? page.items : [];
  const filtered = ['q', ...FILTER_KEYS].some((k) => p[k]);

  return html`<main id="main" class="page library">
    <div class="lib-head">
      <h1>${wishlist ? 'Wishlist' : 'Library'}</h1>
      <nav class="tabs" aria-label="Library or wishlist">
        <a href=${urlOf({ ...p, source: '' })} aria-current=${!wishlist ? 'page' : undefined}>Library</a>
        <a href=${urlOf({ ...p, source: 'WISHLIST' })} aria-current=${wishlist ? 'page' : undefined}>Wishlist</a>
      </nav>
    </div>
    <div class="toolbar">
      <label class="search"><span class="sr-only">Search titles, authors, narrators and series</span>
        <input type="search" placeholder="Search title, author, narrator, series" value=${text}
          onInput=${onSearch} autocomplete="off" /></label>
      <button type="button" class="btn filters-toggle" aria-expanded=${filtersOpen} aria-controls="filters"
        onClick=${() => setFiltersOpen(!filtersOpen)}>Filters</button>
      <label class="sort">Sort
        <select name="sort" value=${sort} onChange=${(e) => set({ sort: e.target.value })}>
          ${SORTS.filter(([k]) => k !== 'relevance' || p.q).map(([k, label]) => html`<option value=${k}>${label}</option>`)}
        </select></label>
      <button type="button" class="btn order" title="Switch the order"
        onClick=${() => set({ order: order === 'asc' ? 'desc' : 'asc' })}><span aria-hidden="true">${order === 'asc' ? '↑' : '↓'}</span>
        ${order === 'asc' ? 'Ascending' : 'Descending'}</button>
      <div class="views" role="group" aria-label="View">
        <button type="button" class="btn" aria-pressed=${!list} onClick=${() => set({ view: '' })}>Grid</button>
        <button type="button" class="btn" aria-pressed=${list} onClick=${() => set({ view: 'list' })}>List</button>
      </div>
    </div>
    <${Filters} p=${p} facets=${facets} set=${set} open=${filtersOpen} />
    <${AddByAsin} onAdded=${() => setTick(tick + 1)} />
    <${Pending} initial=${me && me.enrichment && me.enrichment.pending} onProgress=${() => setTick((t) => t + 1)} />
    <p class="count" aria-live="polite">${ready ? plural(page.total, 'title') + (filtered ? ' match' : '') : ''}</p>
    <${ErrorText} error=${error} />
    ${!ready && !error && html`<${Skeleton} list=${list} />`}
    ${ready && items.length === 0 && html`<div class="empty">
      ${filtered ? html`<p>Nothing matches. <a href=${urlOf({ source: p.source, view: p.view })}>Clear the search and filters</a>.</p>`
        : html`<p>${wishlist ? 'Your wishlist is empty.' : 'Your library is empty.'} Sync it from Audible with the shelfsync extension:
            the dashboard's <a href="/dashboard">Sync with Audible</a> button starts it.</p>`}</div>`}
    ${items.length > 0 && (list
      ? html`<ul class="rows">${items.map((e) => html`<${ListRow} key=${e.asin} e=${e} />`)}</ul>`
      : html`<ul class="grid">${items.map((e, i) => html`<${GridCard} key=${e.asin} e=${e} eager=${i < 12} />`)}</ul>`)}
    ${ready && page.cursor && html`<div ref=${sentinel} class="more">
      <button type="button" class="btn" onClick=${loadMore} disabled=${loading}>${loading ? 'Loading…' : 'Load more'}</button></div>`}
  </main>`;
}
