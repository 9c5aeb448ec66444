// /lists/:id: a recommendation list. Its owner gets the editor: title, visibility, titles
// added with the search picker, a note each, reordered by drag and drop or by the move
// buttons, removed; Save sends it all in one PATCH with the version read (If-Match), and a
// 412 offers reload or overwrite without losing the edit. Anyone else who may see the list
// (UNLISTED by its link, PUBLIC) gets the poster wall with the notes; PRIVATE is a 404.
import { html, useState } from '../html.js';
import { Cover, ErrorText, byline, plural } from '../ui.js';
import {
  VisibilitySelect, ShareButton, Picker, useSaver, Conflict, useSortable, useAnnouncer,
  useFocusAfter, Gone, OneList, ReadHead,
} from '../lists.js';

function ReadView({ list }) {
  return html`<main id="main" class="page list-page">
    <${ReadHead} list=${list} count=${list.itemCount} />
    ${list.items.length === 0 ? html`<p class="empty">This list has no titles yet.</p>`
      : html`<ol class="wall">${list.items.map((it) => html`<li class=${it.inLibrary === false ? 'gone' : ''}>
        <span class="wall-pos" aria-hidden="true">${it.position}</span>
        <${Cover} asin=${it.asin} title=${it.title.title} url=${it.title.coverImageUrl} />
        <span class="tile-title">${it.title.title}</span>
        <span class="tile-author">${byline(it.title.authors) || '\u00a0'}</span>
        ${it.note && html`<p class="note">${it.note}</p>`}
      </li>`)}</ol>`}
  </main>`;
}

const toItems = (list) => list.items.map((it) => ({ asin: it.asin, note: it.note || '', inLibrary: it.inLibrary, title: it.title }));

function Editor({ list, reload, setList }) {
  const [items, setItems] = useState(() => toItems(list));
  const [title, setTitleText] = useState(list.title);
  const [visibility, setVisibility] = useState(list.visibility);
  const [dirty, setDirty] = useState(false);
  const [announce, say] = useAnnouncer();
  const focusAfter = useFocusAfter();
  const path = '/api/lists/' + list.id;
  const saver = useSaver(path, list.version, (saved) => { setList(saved); setItems(toItems(saved)); setDirty(false); });

  const change = (next) => { setItems(next); setDirty(true); };
  function move(from, to) {
    if (to < 0 || to >= items.length || from === to) return;
    const next = items.slice();
    const [it] = next.splice(from, 1);
    next.splice(to, 0, it);
    change(next);
    return it;
  }
  function keyMove(i, d) {
    const it = move(i, i + d);
    if (!it) return;
    say(`${it.title.title}: position ${i + d + 1} of ${items.length}`);
    focusAfter(`[data-key="${it.asin}"] .${d < 0 ? 'up' : 'down'}:not([disabled])`, `[data-key="${it.asin}"] .item-actions .btn:not([disabled])`);
  }
  const listRef = useSortable((key, _f, _t, to) => move(items.findIndex((x) => x.asin === key), to));
  const held = new Set(items.map((x) => x.asin));
  const body = () => ({ title: title.trim(), visibility, items: items.map((x) => ({ asin: x.asin, note: x.note.trim() || null })) });

  async function doReload() {
    const fresh = await reload();
    saver.reset();
    if (fresh) { setItems(toItems(fresh)); setTitleText(fresh.title); setVisibility(fresh.visibility); setDirty(false); }
  }

  return html`<main id="main" class="page list-page editor">
    <header class="list-head">
      <div class="list-fields">
        <h1 class="sr-only">${list.title}</h1>
        <label>List title<input class="title-input" value=${title} maxlength="200" required
          onInput=${(e) => { setTitleText(e.target.value); setDirty(true); }} /></label>
        <label>Who can see it<${VisibilitySelect} value=${visibility}
          onChange=${(v) => { setVisibility(v); setDirty(true); }} /></label>
      </div>
      <${ShareButton} title=${list.title} visibility=${list.visibility} />
    </header>
    <div class="editor-grid">
      <section aria-labelledby="items-h" class="items-col">
        <div class="save-bar">
          <h2 id="items-h">${plural(items.length, 'title')}</h2>
          <span class="muted small" role="status">${saver.saving ? 'Saving…' : dirty ? 'Unsaved changes' : 'All changes saved'}</span>
          <button type="button" class="btn primary save" disabled=${!dirty || saver.saving || !title.trim()}
            onClick=${() => saver.save(body())}>Save</button>
        </div>
        ${saver.conflict && html`<${Conflict} what="list" reload=${doReload} overwrite=${() => saver.overwrite(body())} />`}
        <${ErrorText} error=${saver.error} />
        ${announce}
        ${items.length === 0 && html`<p class="empty">Search your library on the right and add titles: they appear here, in your order.</p>`}
        <ol class="items" ref=${listRef} data-group="list">${items.map((it, i) => html`<li key=${it.asin} data-key=${it.asin}
            class=${'item' + (it.inLibrary === false ? ' gone' : '')}>
          <span class="drag" title="Drag to reorder" aria-hidden="true">⠿</span>
          <span class="item-pos" aria-hidden="true">${i + 1}</span>
          <${Cover} asin=${it.asin} title=${it.title.title} url=${it.title.coverImageUrl} size="small" />
          <div class="item-main">
            <span class="item-title">${it.title.title}</span>
            <span class="muted small">${byline(it.title.authors)}</span> <${Gone} inLibrary=${it.inLibrary} />
            <label class="note-field"><span class="sr-only">Note on ${it.title.title}</span>
              <input placeholder="Add a note (why you recommend it)" value=${it.note} maxlength="2000"
                onInput=${(e) => change(items.map((x) => (x.asin === it.asin ? { ...x, note: e.target.value } : x)))} /></label>
          </div>
          <div class="item-actions">
            <button type="button" class="btn small icon up" disabled=${i === 0} onClick=${() => keyMove(i, -1)}
              aria-label=${'Move ' + it.title.title + ' up'}>↑</button>
            <button type="button" class="btn small icon down" disabled=${i === items.length - 1} onClick=${() => keyMove(i, 1)}
              aria-label=${'Move ' + it.title.title + ' down'}>↓</button>
            <button type="button" class="btn small icon remove" onClick=${() => { change(items.filter((x) => x.asin !== it.asin)); say(it.title.title + ' removed'); }}
              aria-label=${'Remove ' + it.title.title}>✕</button>
          </div>
        </li>`)}</ol>
      </section>
      <${Picker} held=${held} pick=${(e) => { change([...items, { asin: e.asin, note: '', inLibrary: true, title: e.title }]); say(e.title.title + ' added'); }} />
    </div>
  </main>`;
}

export default function ListPage({ params }) {
  return html`<${OneList} path=${'/api/lists/' + encodeURIComponent(params.id)} what="List" Editor=${Editor} ReadView=${ReadView} />`;
}
