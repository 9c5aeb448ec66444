// Small shared pieces: error text, covers with their generated placeholder, formatting.
import { html, useState } from './html.js';

// The name and icon, linking home. Phones hide the name (app.css), so the link carries
// its own accessible name.
export function Brand({ href }) {
  return html`<a class="brand" href=${href} aria-label="shelfsync home"><img src="/icon.svg" alt="" width="28" height="28" /><span>shelfsync</span></a>`;
}

// The API's message where the action was (role=alert: read out when it appears).
export function ErrorText({ error, id }) {
  if (!error) return null;
  const details = (error.details || []).filter((d) => d && d.message && d.message !== error.message);
  return html`<div class="error" role="alert" id=${id}>
    <p>${error.message}</p>
    ${details.length > 0 && html`<ul>${details.map((d) => html`<li>${d.path ? d.path + ': ' : ''}${d.message}</li>`)}</ul>`}
  </div>`;
}

export function initials(text) {
  const words = String(text || '?').replace(/[^\p{L}\p{N}\s]/gu, ' ').split(/\s+/).filter(Boolean);
  const skip = new Set(['the', 'a', 'an', 'of', 'and', 'in', 'on', 'to', 'for', 'der', 'die', 'das', 'le', 'la',
    'el', 'de', 'en', 'los', 'las', 'y']);
  const picked = words.filter((w) => !skip.has(w.toLowerCase()));
  const use = picked.length ? picked : words;
  return (use.slice(0, 2).map((w) => w[0]).join('') || '?').toUpperCase();
}

// A colour of its own for every ASIN (FNV-1a hash -> hue), dark enough for white text.
export function asinHue(asin) {
  let h = 2166136261;
  for (const ch of String(asin)) { h ^= ch.charCodeAt(0); h = Math.imul(h, 16777619); }
  return (h >>> 0) % 360;
}

// A square cover: the image when there is one and it loads, else the placeholder. The
// placeholder is drawn first and stays behind, so nothing shifts when the image arrives.
export function Cover({ asin, title, url, eager, size }) {
  const [failed, setFailed] = useState(false);
  const hue = asinHue(asin);
  return html`<div class=${'cover' + (size ? ' ' + size : '')}>
    <div class="placeholder" aria-hidden="true" style=${{ backgroundColor: `hsl(${hue} 45% 32%)` }}>
      <span>${initials(title)}</span>
    </div>
    ${url && !failed && html`<img src=${url} alt=${title} loading=${eager ? 'eager' : 'lazy'}
      decoding="async" onError=${() => setFailed(true)} />`}
    ${(!url || failed) && html`<span class="sr-only">${title}</span>`}
  </div>`;
}

const UNITS = [['year', 31536000], ['month', 2592000], ['week', 604800], ['day', 86400],
  ['hour', 3600], ['minute', 60]];
const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });

// "3 days ago", "just now".
export function relTime(iso, now = Date.now()) {
  const s = (new Date(iso).getTime() - now) / 1000;
  for (const [unit, secs] of UNITS) {
    if (Math.abs(s) >= secs) return rtf.format(Math.round(s / secs), unit);
  }
  return 'just now';
}

export function fullDate(iso) {
  return new Date(iso).toLocaleString('en', { dateStyle: 'medium', timeStyle: 'short' });
}

// Minutes -> "11 h 5 min".
export function duration(min) {
  if (min == null) return null;
  const h = Math.floor(min / 60), m = min % 60;
  return h ? `${h} h${m ? ' ' + m + ' min' : ''}` : `${m} min`;
}

export const num = (n) => Number(n || 0).toLocaleString('en');
export const plural = (n, one, many) => `${num(n)} ${n === 1 ? one : (many || one + 's')}`;

export function byline(list) {
  return (list || []).join(', ');
}

export function Progress({ value }) {
  if (!value) return null;
  return html`<div class="progress" role="img" aria-label=${value >= 100 ? 'Finished' : value + '% listened'}>
    <span style=${{ width: Math.min(100, value) + '%' }}></span></div>`;
}

// Sets the document title for a page.
export function setTitle(text) {
  document.title = text ? text + ' · shelfsync' : 'shelfsync';
}
