// The signed-in listener (GET /api/me), loaded once and refreshed on demand.
import { get, ApiError } from './api.js';

let current = null;       // a promise of {user, counts, profile} or null (signed out)

export function loadMe(force = false) {
  if (!current || force) {
    current = get('/api/me').catch((e) => {
      if (e instanceof ApiError && e.status === 401) return null;
      current = null;
      throw e;
    });
  }
  return current;
}

export function forgetMe() { current = Promise.resolve(null); }
