// The UI library, in one place: Preact + htm (tagged templates, no build step).
import { h, render, Fragment } from '../vendor/preact.module.js';
import htm from '../vendor/htm.module.js';
export * from '../vendor/hooks.module.js';
export { h, render, Fragment };
export const html = htm.bind(h);
