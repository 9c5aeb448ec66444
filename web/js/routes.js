// The app's pages. Adding a page: write js/pages/<name>.js (export default a component
// taking {params, query}) and add one line here. `public` pages render without a session;
// every other page sends a signed-out visitor to / and back after sign-in.
export const routes = [
  { path: '/', load: () => import('./pages/home.js'), public: true },
  { path: '/dashboard', load: () => import('./pages/dashboard.js'), nav: 'Dashboard' },
  { path: '/library', load: () => import('./pages/library.js'), nav: 'Library' },
  { path: '/library/:asin', load: () => import('./pages/title.js') },
  { path: '/lists', load: () => import('./pages/lists.js'), nav: 'Lists' },
  { path: '/lists/:id', load: () => import('./pages/list.js'), public: true },
  { path: '/tierlists/:id', load: () => import('./pages/tierlist.js'), public: true },
  { path: '/u/:username', load: () => import('./pages/profile.js'), public: true },
  { path: '/stats', load: () => import('./pages/stats.js'), nav: 'Stats' },
  { path: '/settings', load: () => import('./pages/settings.js') },
  { path: '/import', load: () => import('./pages/import.js') },
];
