// /u/:username: a public profile, signed in or not: the handle, a generated avatar (the
// API keeps the sign-in name and picture private) and the PUBLIC lists and tier lists.
import { html, useState, useEffect } from '../html.js';
import { get, ApiError } from '../api.js';
import { ErrorText, initials, asinHue, setTitle } from '../ui.js';
import { ListCard } from './lists.js';
import { NotFound } from '../lists.js';

export default function Profile({ params }) {
  const [data, setData] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    setTitle('@' + params.username);
    get('/api/users/' + encodeURIComponent(params.username) + '/lists').then((d) => { setData(d); setTitle('@' + d.user.username); }, setError);
  }, [params.username]);
  if (error) {
    if (error instanceof ApiError && error.status === 404) return html`<${NotFound} what="Profile" />`;
    return html`<main id="main" class="page narrow"><h1>Could not load this profile</h1><${ErrorText} error=${error} /></main>`;
  }
  if (!data) return html`<main id="main" class="page" aria-busy="true"><h1 class="sr-only">Loading profile</h1><div class="title-skeleton"></div></main>`;
  const name = data.user.username;
  const all = [...data.lists.map((s) => ({ s, kind: 'list' })), ...data.tierLists.map((s) => ({ s, kind: 'tier' }))]
    .sort((a, b) => (a.s.updatedAt < b.s.updatedAt ? 1 : -1));
  return html`<main id="main" class="page profile-page">
    <header class="profile-head">
      <span class="profile-avatar" aria-hidden="true" style=${{ backgroundColor: `hsl(${asinHue(name)} 45% 32%)` }}>${initials(name.replace(/_/g, ' '))}</span>
      <div><h1>@${name}</h1><p class="muted">${all.length === 0 ? 'No public lists yet.' : `${data.lists.length} ${data.lists.length === 1 ? 'list' : 'lists'} · ${data.tierLists.length} ${data.tierLists.length === 1 ? 'tier list' : 'tier lists'}`}</p></div>
    </header>
    ${all.length > 0 && html`<ul class="list-cards">${all.map(({ s, kind }) => html`<${ListCard} key=${s.id} s=${s} kind=${kind} owner=${false} />`)}</ul>`}
  </main>`;
}
