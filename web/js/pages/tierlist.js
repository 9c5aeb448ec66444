// /tierlists/:id: a tier list. Its owner gets the editor: tier rows (label editable, add,
// remove, reorder), an unranked tray fed by the search picker, titles dragged between and
// within tiers or moved with buttons; Save sends labels and assignments in one PATCH with
// If-Match, as the list editor does. Titles left in the tray are not saved (the API has
// ranked titles only). Others see the read-only rows; PRIVATE is a 404.
import { html, useState } from '../html.js';
import { ErrorText, Cover, plural } from '../ui.js';
import {
  VisibilitySelect, ShareButton, Picker, useSaver, Conflict, useSortable, useAnnouncer, useFocusAfter, OneList, ReadHead,
} from '../lists.js';

const TRAY = 'tray';
let seq = 0;
const newId = () => 't' + (++seq);

// {tiers: [{id, label, items}], tray: []} from a tier list answer.
function toState(tl) {
  const tiers = tl.tierLabels.map((label) => ({ id: newId(), label, items: [] }));
  const byLabel = new Map(tiers.map((t) => [t.label, t]));
  for (const a of tl.assignments) byLabel.get(a.tier).items.push({ asin: a.asin, inLibrary: a.inLibrary, title: a.title });
  return { tiers, tray: [] };
}

const HUES = [0, 30, 50, 110, 190, 230, 280, 320];

function Title({ it, tiers, where, index, count, act }) {
  const t = it.title;
  const tierIndex = where === TRAY ? tiers.length : tiers.findIndex((x) => x.id === where);
  return html`<li class=${'tier-item' + (it.inLibrary === false ? ' gone' : '')} data-key=${it.asin} key=${it.asin}
      title=${it.inLibrary === false ? t.title + ' — no longer in your library' : t.title}>
    <div class="drag"><${Cover} asin=${it.asin} title=${t.title} url=${t.coverImageUrl} /></div>
    ${it.inLibrary === false && html`<span class="gone-note">no longer in your library</span>`}
    <div class="tier-moves">
      <button type="button" class="mv left" disabled=${index === 0} aria-label=${'Move ' + t.title + ' earlier'}
        onClick=${() => act(it, where, tierIndex, index - 1, 'left')}>◀</button>
      <button type="button" class="mv up" disabled=${tierIndex === 0} aria-label=${'Move ' + t.title + ' to the tier above'}
        onClick=${() => act(it, where, tierIndex - 1, null, 'up')}>▲</button>
      <button type="button" class="mv down" disabled=${tierIndex >= tiers.length} aria-label=${'Move ' + t.title + (tierIndex === tiers.length - 1 ? ' to unranked' : ' to the tier below')}
        onClick=${() => act(it, where, tierIndex + 1, null, 'down')}>▼</button>
      <button type="button" class="mv right" disabled=${index === count - 1} aria-label=${'Move ' + t.title + ' later'}
        onClick=${() => act(it, where, tierIndex, index + 1, 'right')}>▶</button>
    </div>
  </li>`;
}

function Row({ group, items, tiers, act, onDrop, children, cls }) {
  const ref = useSortable(onDrop, 'tiers');
  return html`<div class=${'tier-row ' + (cls || '')}>
    ${children}
    <ol class="tier-items" ref=${ref} data-group=${group}>
      ${items.map((it, i) => html`<${Title} key=${it.asin} it=${it} tiers=${tiers} where=${group} index=${i} count=${items.length} act=${act} />`)}
    </ol>
  </div>`;
}

function Editor({ list: tl, reload, setList: setTl }) {
  const [st, setSt] = useState(() => toState(tl));
  const [title, setTitleText] = useState(tl.title);
  const [visibility, setVisibility] = useState(tl.visibility);
  const [dirty, setDirty] = useState(false);
  const [removing, setRemoving] = useState(null);     // {tier, to}
  const [announce, say] = useAnnouncer();
  const focusAfter = useFocusAfter();
  const saver = useSaver('/api/tierlists/' + tl.id, tl.version, (saved) => {
    setTl(saved);
    setSt((cur) => ({ ...toState(saved), tray: cur.tray }));
    setDirty(false);
  });
  const change = (next) => { setSt(next); setDirty(true); };
  const listOf = (s, group) => (group === TRAY ? s.tray : s.tiers.find((t) => t.id === group).items);
  const nameOf = (s, group) => (group === TRAY ? 'Unranked' : s.tiers.find((t) => t.id === group).label);

  // Moves asin from group `from` to group `to` at index (null: the end).
  function moveTo(asin, from, to, index) {
    const next = { tiers: st.tiers.map((t) => ({ ...t, items: t.items.slice() })), tray: st.tray.slice() };
    const src = listOf(next, from);
    const i = src.findIndex((x) => x.asin === asin);
    const [it] = src.splice(i, 1);
    const dst = listOf(next, to);
    dst.splice(index == null ? dst.length : Math.min(index, dst.length), 0, it);
    change(next);
    return { it, next };
  }
  function act(it, where, tierIndex, index, dir) {
    const to = tierIndex >= st.tiers.length ? TRAY : st.tiers[tierIndex].id;
    const { next } = moveTo(it.asin, where, to, index);
    const pos = listOf(next, to).findIndex((x) => x.asin === it.asin) + 1;
    say(`${it.title.title}: ${nameOf(next, to)}, position ${pos}`);
    focusAfter(`[data-key="${it.asin}"] .mv.${dir}:not([disabled])`, `[data-key="${it.asin}"] .mv:not([disabled])`);
  }
  const onDrop = (key, from, to, index) => moveTo(key, from, to, index);

  function setTiers(tiers) { change({ ...st, tiers }); }
  function rename(id, label) { setTiers(st.tiers.map((t) => (t.id === id ? { ...t, label } : t))); }
  function moveTier(i, d) {
    const tiers = st.tiers.slice();
    const [t] = tiers.splice(i, 1);
    tiers.splice(i + d, 0, t);
    setTiers(tiers);
    say(`Tier ${t.label} moved ${d < 0 ? 'up' : 'down'}`);
    focusAfter(`[data-tier="${t.id}"] .tier-${d < 0 ? 'up' : 'down'}:not([disabled])`, `[data-tier="${t.id}"] .mv:not([disabled])`);
  }
  function addTier() {
    const used = new Set(st.tiers.map((t) => t.label));
    let n = st.tiers.length + 1;
    while (used.has('Tier ' + n)) n++;
    const t = { id: newId(), label: 'Tier ' + n, items: [] };
    setTiers([...st.tiers, t]);
    focusAfter(`[data-tier="${t.id}"] input`);
  }
  function removeTier(tier, to) {
    const next = { tiers: st.tiers.filter((t) => t.id !== tier.id).map((t) => ({ ...t, items: t.items.slice() })), tray: st.tray.slice() };
    listOf(next, to).push(...tier.items);
    change(next);
    setRemoving(null);
    say(`Tier ${tier.label} removed` + (tier.items.length ? `; its titles moved to ${nameOf(next, to)}` : ''));
  }
  function askRemove(tier) {
    if (tier.items.length === 0) { removeTier(tier, TRAY); return; }
    const other = st.tiers.find((t) => t.id !== tier.id);
    setRemoving({ tier, to: other ? other.id : TRAY });
  }

  const held = new Set([...st.tray, ...st.tiers.flatMap((t) => t.items)].map((x) => x.asin));
  const body = () => ({
    title: title.trim(), visibility,
    tierLabels: st.tiers.map((t) => t.label.trim()),
    assignments: st.tiers.flatMap((t) => t.items.map((it, i) => ({ asin: it.asin, tier: t.label.trim(), position: i + 1 }))),
  });
  async function doReload() {
    const fresh = await reload();
    saver.reset();
    if (fresh) { setSt(toState(fresh)); setTitleText(fresh.title); setVisibility(fresh.visibility); setDirty(false); }
  }
  const canSave = dirty && !saver.saving && title.trim() && st.tiers.length > 0 && st.tiers.every((t) => t.label.trim());

  return html`<main id="main" class="page list-page editor tier-editor">
    <header class="list-head">
      <div class="list-fields">
        <h1 class="sr-only">${tl.title}</h1>
        <label>Tier list title<input class="title-input" value=${title} maxlength="200"
          onInput=${(e) => { setTitleText(e.target.value); setDirty(true); }} /></label>
        <label>Who can see it<${VisibilitySelect} value=${visibility} onChange=${(v) => { setVisibility(v); setDirty(true); }} /></label>
      </div>
      <${ShareButton} title=${tl.title} visibility=${tl.visibility} />
    </header>
    <div class="save-bar">
      <h2>${plural(st.tiers.reduce((n, t) => n + t.items.length, 0), 'ranked title')}</h2>
      <span class="muted small" role="status">${saver.saving ? 'Saving…' : dirty ? 'Unsaved changes' : 'All changes saved'}</span>
      <button type="button" class="btn primary save" disabled=${!canSave} onClick=${() => saver.save(body())}>Save</button>
    </div>
    ${saver.conflict && html`<${Conflict} what="tier list" reload=${doReload} overwrite=${() => saver.overwrite(body())} />`}
    <${ErrorText} error=${saver.error} />
    ${announce}
    <div class="tiers">
      ${st.tiers.map((t, i) => html`<${Row} key=${t.id} group=${t.id} items=${t.items} tiers=${st.tiers} act=${act} onDrop=${onDrop}>
        <div class="tier-label" data-tier=${t.id} style=${{ '--hue': HUES[i % HUES.length] }}>
          <label><span class="sr-only">Label of tier ${i + 1}</span>
            <input value=${t.label} maxlength="50" onInput=${(e) => rename(t.id, e.target.value)} /></label>
          <div class="tier-tools">
            <button type="button" class="mv tier-up" disabled=${i === 0} aria-label=${'Move tier ' + t.label + ' up'} onClick=${() => moveTier(i, -1)}>▲</button>
            <button type="button" class="mv tier-down" disabled=${i === st.tiers.length - 1} aria-label=${'Move tier ' + t.label + ' down'} onClick=${() => moveTier(i, 1)}>▼</button>
            <button type="button" class="mv tier-remove" aria-label=${'Remove tier ' + t.label} onClick=${() => askRemove(t)}>✕</button>
          </div>
        </div>
        ${removing && removing.tier.id === t.id && html`<div class="remove-ask" role="group" aria-label=${'Remove tier ' + t.label}>
          <label>${plural(t.items.length, 'title')} in ${t.label}: move them to
            <select value=${removing.to} onChange=${(e) => setRemoving({ ...removing, to: e.target.value })}>
              ${st.tiers.filter((x) => x.id !== t.id).map((x) => html`<option value=${x.id}>${x.label}</option>`)}
              <option value=${TRAY}>Unranked</option>
            </select></label>
          <button type="button" class="btn small danger confirm-remove" onClick=${() => removeTier(t, removing.to)}>Remove tier</button>
          <button type="button" class="btn small" onClick=${() => setRemoving(null)}>Keep it</button>
        </div>`}
      <//>`)}
      <button type="button" class="btn add-tier" onClick=${addTier} disabled=${st.tiers.length >= 20}>+ Add a tier</button>
      <${Row} group=${TRAY} items=${st.tray} tiers=${st.tiers} act=${act} onDrop=${onDrop} cls="tray">
        <div class="tier-label tray-label"><h2>Unranked</h2>
          <span class="small">${st.tray.length ? 'Drag into a tier. Not saved while here.' : 'Titles you add land here.'}</span></div>
      <//>
    </div>
    <${Picker} held=${held} label="Add titles to rank" pick=${(e) => { change({ ...st, tray: [...st.tray, { asin: e.asin, inLibrary: true, title: e.title }] }); say(e.title.title + ' added to Unranked'); }} />
  </main>`;
}

function ReadView({ list: tl }) {
  const st = toState(tl);
  return html`<main id="main" class="page list-page">
    <${ReadHead} list=${tl} count=${tl.assignmentCount} />
    <div class="tiers">${st.tiers.map((t, i) => html`<div class="tier-row">
      <div class="tier-label" style=${{ '--hue': HUES[i % HUES.length] }}><h2>${t.label}</h2></div>
      <ol class="tier-items">${t.items.map((it) => html`<li class=${'tier-item' + (it.inLibrary === false ? ' gone' : '')}>
        <${Cover} asin=${it.asin} title=${it.title.title} url=${it.title.coverImageUrl} /></li>`)}</ol>
    </div>`)}</div>
  </main>`;
}

export default function TierListPage({ params }) {
  return html`<${OneList} path=${'/api/tierlists/' + encodeURIComponent(params.id)} what="Tier list" Editor=${Editor} ReadView=${ReadView} />`;
}
