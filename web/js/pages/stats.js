// /stats: a few honest pictures of the library (GET /api/stats).
import { html, useState, useEffect } from '../html.js';
import { get } from '../api.js';
import { ErrorText, num, setTitle } from '../ui.js';
import { Columns, Bars, Stack } from '../charts.js';

const lib = (k, v) => '/library?' + new URLSearchParams({ [k]: v });

function fillYears(rows) {
  if (!rows.length) return [];
  const by = new Map(rows.map((r) => [r.year, r.count]));
  const out = [];
  for (let y = rows[0].year; y <= rows[rows.length - 1].year; y++) out.push({ label: String(y), value: by.get(y) || 0 });
  return out;
}

export default function Stats() {
  const [s, setS] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => { setTitle('Stats'); get('/api/stats').then(setS, setError); }, []);
  if (!s) {
    return html`<main id="main" class="page"><h1>Stats</h1>${error ? html`<${ErrorText} error=${error} />`
      : html`<div class="chart-skeleton" aria-busy="true"></div>`}</main>`;
  }
  const p = s.progress;
  const owned = p.finished + p.inProgress + p.notStarted;
  if (owned === 0) {
    return html`<main id="main" class="page narrow"><h1>Stats</h1>
      <p class="empty">No titles yet: <a href="/dashboard">sync your library</a> and the charts appear here.</p></main>`;
  }
  return html`<main id="main" class="page stats-page">
    <h1>Stats</h1>
    <p class="muted">${num(owned)} titles in your library (the wishlist is left out).</p>
    <section class="card wide" aria-labelledby="st-progress"><h2 id="st-progress">Finished, in progress, not started</h2>
      <${Stack} id="progress" title="Listening progress" parts=${[
        { label: 'Finished', value: p.finished, cls: 'c1' },
        { label: 'In progress', value: p.inProgress, cls: 'c2' },
        { label: 'Not started', value: p.notStarted, cls: 'c3' }]} />
    </section>
    <section class="card wide" aria-labelledby="st-years"><h2 id="st-years">Titles added per year</h2>
      <${Columns} id="years" title="Titles added per year" unit="titles" data=${fillYears(s.addedPerYear)} />
    </section>
    <div class="chart-grid">
      <section class="card" aria-labelledby="st-cat"><h2 id="st-cat">Listening hours by category</h2>
        <${Bars} id="categories" title="Hours by category" unit="hours" data=${s.hoursByCategory.map((c) => ({ label: c.name, value: c.hours, href: lib('category', c.name) }))} />
      </section>
      <section class="card" aria-labelledby="st-series"><h2 id="st-series">Series completion</h2>
        <p class="muted small">Finished of the books you own, per series.</p>
        <${Bars} id="series" title="Series: finished of owned" unit="finished" data=${s.seriesCompletion.map((r) => ({
          label: r.name, value: r.finished, of: r.owned, text: `${r.finished} of ${r.owned}`, href: lib('series', r.name) }))} />
      </section>
      <section class="card" aria-labelledby="st-auth"><h2 id="st-auth">Top authors</h2>
        <${Bars} id="authors" title="Top authors" unit="titles" data=${s.topAuthors.map((a) => ({ label: a.name, value: a.count, href: lib('author', a.name) }))} />
      </section>
      <section class="card" aria-labelledby="st-narr"><h2 id="st-narr">Top narrators</h2>
        <${Bars} id="narrators" title="Top narrators" unit="titles" data=${s.topNarrators.map((a) => ({ label: a.name, value: a.count, href: lib('narrator', a.name) }))} />
      </section>
    </div>
  </main>`;
}
