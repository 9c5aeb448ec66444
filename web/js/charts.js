// Hand-drawn SVG charts. Colours come from CSS (classes), so both themes stay readable;
// every chart has a text title and a description for screen readers.
import { html } from './html.js';
import { num } from './ui.js';

// Vertical bars: data [{label, value}], e.g. titles added per year.
export function Columns({ id, title, data, unit }) {
  const W = 640, H = 240, top = 20, bottom = 28, left = 8;
  const max = Math.max(1, ...data.map((d) => d.value));
  const bw = (W - left * 2) / Math.max(1, data.length);
  const every = Math.ceil(data.length / 12);
  return html`<svg class="chart columns" viewBox=${`0 0 ${W} ${H}`} role="img" aria-labelledby=${id + '-t ' + id + '-d'} data-chart=${id}>
    <title id=${id + '-t'}>${title}</title>
    <desc id=${id + '-d'}>${data.map((d) => `${d.label}: ${num(d.value)} ${unit}`).join('; ')}</desc>
    <line class="axis" x1=${left} x2=${W - left} y1=${H - bottom} y2=${H - bottom} />
    ${data.map((d, i) => {
      const h = Math.max(1, (d.value / max) * (H - top - bottom));
      const x = left + i * bw + bw * 0.15;
      return html`<g class="bar">
        <rect x=${x} y=${H - bottom - h} width=${bw * 0.7} height=${h} rx="2" />
        ${data.length <= 16 && html`<text class="value" x=${x + bw * 0.35} y=${H - bottom - h - 5} text-anchor="middle">${num(d.value)}</text>`}
        ${i % every === 0 && html`<text class=${'label' + ((i / every) % 2 ? ' alt' : '')} x=${x + bw * 0.35} y=${H - 8} text-anchor="middle">${d.label}</text>`}
      </g>`;
    })}
  </svg>`;
}

// Horizontal bars with their labels: data [{label, value, href?, of?, text?}]; a bar is
// value / of long when of is given (a part of a whole), else value / the largest value.
export function Bars({ id, title, data, unit, format = num }) {
  const max = Math.max(1, ...data.map((d) => d.value));
  return html`<ol class="hbars" aria-label=${title} data-chart=${id}>
    ${data.map((d) => html`<li>
      <span class="hbar-label">${d.href ? html`<a href=${d.href}>${d.label}</a>` : d.label}</span>
      <svg class="hbar" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">
        <rect class="track" x="0" y="0" width="100" height="10" rx="2" />
        <rect class="fill" x="0" y="0" width=${Math.max(0.5, (d.value / (d.of || max)) * 100)} height="10" rx="2" />
      </svg>
      <span class="hbar-value">${d.text || format(d.value)} <span class="sr-only">${unit}</span></span>
    </li>`)}
  </ol>`;
}

// One stacked bar of parts [{label, value, cls}], with a legend.
export function Stack({ id, title, parts }) {
  const total = parts.reduce((s, p) => s + p.value, 0) || 1;
  let x = 0;
  return html`<figure class="stack" data-chart=${id}>
    <svg viewBox="0 0 100 12" preserveAspectRatio="none" role="img" aria-label=${title + ': ' + parts.map((p) => `${p.label} ${num(p.value)}`).join(', ')}>
      ${parts.map((p) => { const w = (p.value / total) * 100; const r = html`<rect class=${p.cls} x=${x} y="0" width=${w} height="12" />`; x += w; return r; })}
    </svg>
    <figcaption class="legend">${parts.map((p) => html`<span><i class=${'swatch ' + p.cls}></i>${p.label} <strong>${num(p.value)}</strong>${' '}<span class="muted">(${Math.round((p.value / total) * 100)}%)</span></span>`)}</figcaption>
  </figure>`;
}
