// A local OpenID Connect provider for shelfsync's specs, strict like Google.
//
// oauth2-mock-server supplies the RSA keys, the JWKS and the RS256 signing; this launcher
// puts Google's rules in front of it, which the mock alone does not enforce:
//   /authorize  client_id registered, redirect_uri registered exactly, response_type=code,
//               scope with openid, a PKCE S256 challenge; state passed back untouched.
//   /token      client authenticated (client_secret_basic or client_secret_post), the code
//               known, unexpired, issued to this client and never redeemed before (every
//               redemption attempt consumes it), redirect_uri identical to the authorize
//               one, code_verifier present and matching the challenge.
// The ID token carries Google's claims: iss, aud, azp, sub, email, email_verified, name,
// picture, given_name, family_name, iat, exp, nonce.
//
// Usage: node provider.js [--port N] [--client-id ID --client-secret S --redirect-uri URI...]
// Listens on 127.0.0.1 only and prints one JSON line when ready: {"port":N,"issuer":"..."}.
//
// Control endpoints (JSON in and out), for specs:
//   POST /control/client  {client_id, client_secret, redirect_uris: [...]}  registers a client
//   POST /control/next    {claims: {...}, misbehave: "..."}  the user and misbehaviour the
//                         next /authorize binds to its code (default: DEFAULT_USER, none).
//                         misbehave: wrong_nonce | expired | future_iat | wrong_aud |
//                         wrong_iss | email_unverified | foreign_key (signed by a key not in
//                         the JWKS, same kid) | unknown_kid (foreign key, new kid) |
//                         alg_none | hs256_pubkey (HS256 keyed with the public key's PEM) |
//                         deny (authorize answers error=access_denied) |
//                         token_server_error (the token endpoint answers 500).
//                         claims are merged into the ID token last and may set any claim.
//   POST /control/rotate  {retire_old: bool}  a new signing key with a new kid; the old
//                         one stays in the JWKS unless retire_old
//   GET  /control/state   {jwks_fetches, discovery_fetches, token_requests: [{ok, error,
//                         body}], signing_kid}
//   POST /control/reset   forgets codes, pending profile and counters (keys and clients stay)
import { createHash, createHmac, createPublicKey, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { OAuth2Issuer } from 'oauth2-mock-server';

export const DEFAULT_USER = {
  sub: '109876543210987654321',
  email: 'listener@example.com',
  email_verified: true,
  name: 'Test Listener',
  given_name: 'Test',
  family_name: 'Listener',
  picture: 'https://lh3.googleusercontent.com/a/test-listener',
};

const CODE_TTL_MS = 10 * 60 * 1000;
const ID_TOKEN_TTL_S = 3600;
const MISBEHAVIOURS = new Set([
  'wrong_nonce', 'expired', 'future_iat', 'wrong_aud', 'wrong_iss', 'email_unverified',
  'foreign_key', 'unknown_kid', 'alg_none', 'hs256_pubkey', 'deny', 'token_server_error',
]);

function parseArgs(argv) {
  const opts = { port: 0, clientId: null, clientSecret: null, redirectUris: [] };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case '--port': opts.port = Number(next()); break;
      case '--client-id': opts.clientId = next(); break;
      case '--client-secret': opts.clientSecret = next(); break;
      case '--redirect-uri': opts.redirectUris.push(next()); break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  return opts;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const nowS = () => Math.floor(Date.now() / 1000);

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    ...(body === undefined ? {} : { 'Content-Type': 'application/json; charset=utf-8' }),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(text);
}

function redirect(res, url) {
  res.writeHead(302, { Location: url.href, 'Cache-Control': 'no-store' });
  res.end();
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(req) {
  const text = await readBody(req);
  return text === '' ? {} : JSON.parse(text);
}

// RFC 7636 section 4.1: 43 to 128 unreserved characters.
const VERIFIER_RE = /^[A-Za-z0-9\-._~]{43,128}$/;

class Provider {
  constructor(opts) {
    this.issuer = new OAuth2Issuer();
    this.foreign = new OAuth2Issuer();   // keys that never appear in the JWKS
    this.clients = new Map();
    this.codes = new Map();
    this.signingKid = null;
    this.reset();
    if (opts.clientId) {
      this.clients.set(opts.clientId, {
        secret: opts.clientSecret ?? '', redirectUris: new Set(opts.redirectUris),
      });
    }
  }

  reset() {
    this.codes.clear();
    this.nextProfile = null;
    this.jwksFetches = 0;
    this.discoveryFetches = 0;
    this.tokenRequests = [];
  }

  async init() {
    const key = await this.issuer.keys.generate('RS256');
    this.signingKid = key.kid;
  }

  async rotate(retireOld) {
    const oldKid = this.signingKid;
    // A fresh store holding only the new key when the old one retires.
    if (retireOld) {
      const url = this.issuer.url;
      this.issuer = new OAuth2Issuer();
      this.issuer.url = url;
    }
    const key = await this.issuer.keys.generate('RS256');
    this.signingKid = key.kid;
    return { old_kid: oldKid, kid: key.kid };
  }

  discovery() {
    const iss = this.issuer.url;
    return {
      issuer: iss,
      authorization_endpoint: `${iss}/authorize`,
      token_endpoint: `${iss}/token`,
      userinfo_endpoint: `${iss}/userinfo`,
      jwks_uri: `${iss}/jwks`,
      response_types_supported: ['code'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      scopes_supported: ['openid', 'email', 'profile'],
      token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
      claims_supported: ['aud', 'email', 'email_verified', 'exp', 'family_name', 'given_name',
        'iat', 'iss', 'name', 'picture', 'sub'],
      code_challenge_methods_supported: ['plain', 'S256'],
      grant_types_supported: ['authorization_code'],
    };
  }

  authorize(req, res, url) {
    const q = url.searchParams;
    const client = this.clients.get(q.get('client_id') ?? '');
    // Like Google: problems with the client or the redirect URI are shown to the user,
    // never redirected, since the redirect URI itself cannot be trusted.
    if (!client) return send(res, 401, { error: 'invalid_client', error_description: 'The OAuth client was not found.' });
    const redirectUri = q.get('redirect_uri') ?? '';
    if (!client.redirectUris.has(redirectUri)) {
      return send(res, 400, { error: 'redirect_uri_mismatch', error_description: `redirect_uri ${redirectUri} is not registered` });
    }
    const back = new URL(redirectUri);
    const fail = (error, description) => {
      back.searchParams.set('error', error);
      if (description) back.searchParams.set('error_description', description);
      if (q.has('state')) back.searchParams.set('state', q.get('state'));
      return redirect(res, back);
    };
    const profile = this.nextProfile ?? { claims: {}, misbehave: null };
    this.nextProfile = null;
    if (q.get('response_type') !== 'code') return fail('unsupported_response_type');
    const scopes = (q.get('scope') ?? '').split(' ');
    if (!scopes.includes('openid')) return fail('invalid_scope', 'openid scope required');
    if (!q.get('code_challenge') || q.get('code_challenge_method') !== 'S256') {
      return fail('invalid_request', 'a PKCE S256 code_challenge is required');
    }
    if (profile.misbehave === 'deny') return fail('access_denied');

    const code = `4/${b64url(randomBytes(32))}`;
    this.codes.set(code, {
      clientId: q.get('client_id'),
      redirectUri,
      challenge: q.get('code_challenge'),
      nonce: q.get('nonce'),
      scope: q.get('scope'),
      profile,
      expires: Date.now() + CODE_TTL_MS,
      used: false,
    });
    back.searchParams.set('code', code);
    if (q.has('state')) back.searchParams.set('state', q.get('state'));
    back.searchParams.set('scope', q.get('scope'));
    return redirect(res, back);
  }

  clientFromRequest(req, form) {
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Basic ')) {
      const decoded = Buffer.from(auth.slice(6), 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      if (i < 0) return null;
      return { id: decodeURIComponent(decoded.slice(0, i)), secret: decodeURIComponent(decoded.slice(i + 1)) };
    }
    if (form.has('client_id')) return { id: form.get('client_id'), secret: form.get('client_secret') };
    return null;
  }

  async token(req, res) {
    const raw = await readBody(req);
    const record = (ok, error) => this.tokenRequests.push({ ok, error, body: raw });
    const reject = (status, error, description) => {
      record(false, error);
      return send(res, status, { error, error_description: description });
    };
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      return reject(400, 'invalid_request', 'form body expected');
    }
    const form = new URLSearchParams(raw);
    const creds = this.clientFromRequest(req, form);
    const client = creds && this.clients.get(creds.id);
    if (!client || typeof creds.secret !== 'string' || creds.secret !== client.secret) {
      return reject(401, 'invalid_client', 'Unauthorized');
    }
    if (form.get('grant_type') !== 'authorization_code') {
      return reject(400, 'unsupported_grant_type', 'Invalid grant_type');
    }
    const grant = this.codes.get(form.get('code') ?? '');
    if (!grant || grant.clientId !== creds.id) return reject(400, 'invalid_grant', 'Malformed auth code.');
    if (grant.used) return reject(400, 'invalid_grant', 'Bad Request');
    grant.used = true;   // any redemption attempt consumes the code
    if (Date.now() > grant.expires) return reject(400, 'invalid_grant', 'Bad Request');
    if (form.get('redirect_uri') !== grant.redirectUri) return reject(400, 'redirect_uri_mismatch', 'Bad Request');
    const verifier = form.get('code_verifier');
    if (!verifier) return reject(400, 'invalid_grant', 'Missing code verifier.');
    const computed = b64url(createHash('sha256').update(verifier, 'ascii').digest());
    if (!VERIFIER_RE.test(verifier) || computed !== grant.challenge) {
      return reject(400, 'invalid_grant', 'Invalid code verifier.');
    }
    if (grant.profile.misbehave === 'token_server_error') {
      return reject(500, 'server_error', 'Internal error');
    }
    const idToken = await this.idToken(creds.id, grant);
    record(true, null);
    return send(res, 200, {
      access_token: `ya29.${b64url(randomBytes(32))}`,
      expires_in: 3599,
      scope: grant.scope,
      token_type: 'Bearer',
      id_token: idToken,
    });
  }

  async idToken(clientId, grant) {
    const now = nowS();
    const { misbehave, claims: extra } = grant.profile;
    const payload = {
      iss: this.issuer.url,
      azp: clientId,
      aud: clientId,
      ...DEFAULT_USER,
      iat: now,
      exp: now + ID_TOKEN_TTL_S,
    };
    if (grant.nonce !== null) payload.nonce = grant.nonce;
    switch (misbehave) {
      case 'wrong_nonce': payload.nonce = b64url(randomBytes(16)); break;
      case 'expired': payload.iat = now - 2 * ID_TOKEN_TTL_S; payload.exp = now - ID_TOKEN_TTL_S; break;
      case 'future_iat': payload.iat = now + ID_TOKEN_TTL_S; payload.exp = now + 2 * ID_TOKEN_TTL_S; break;
      case 'wrong_aud': payload.aud = 'another-client.apps.googleusercontent.com'; payload.azp = payload.aud; break;
      case 'wrong_iss': payload.iss = 'https://evil.example'; break;
      case 'email_unverified': payload.email_verified = false; break;
      default: break;
    }
    Object.assign(payload, extra);
    for (const [k, v] of Object.entries(payload)) if (v === null) delete payload[k];

    switch (misbehave) {
      case 'alg_none':
        return this.unsigned({ alg: 'none', typ: 'JWT', kid: this.signingKid }, payload);
      case 'hs256_pubkey':
        return this.hs256WithPublicKey(payload);
      case 'foreign_key':
        return this.sign(this.foreign, this.signingKid, payload, true);
      case 'unknown_kid':
        return this.sign(this.foreign, `unknown-${b64url(randomBytes(8))}`, payload, true);
      default:
        return this.sign(this.issuer, this.signingKid, payload, false);
    }
  }

  async sign(issuer, kid, payload, generate) {
    if (generate && !issuer.keys.get(kid)) await issuer.keys.generate('RS256', { kid });
    issuer.url ??= this.issuer.url;
    return issuer.buildToken({
      kid,
      scopesOrTransform: (_header, body) => {
        for (const k of Object.keys(body)) delete body[k];
        Object.assign(body, payload);
      },
    });
  }

  unsigned(header, payload) {
    return `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}.`;
  }

  // The classic confusion attack: an HS256 token whose HMAC key is the PEM text of the
  // provider's public key, which a verifier that trusts the header's alg would use.
  hs256WithPublicKey(payload) {
    const jwk = this.issuer.keys.toJSON().find((k) => k.kid === this.signingKid);
    const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: this.signingKid }))}.${b64url(JSON.stringify(payload))}`;
    return `${input}.${b64url(createHmac('sha256', pem).update(input).digest())}`;
  }

  async control(req, res, path) {
    if (path === '/control/state' && req.method === 'GET') {
      return send(res, 200, {
        jwks_fetches: this.jwksFetches,
        discovery_fetches: this.discoveryFetches,
        token_requests: this.tokenRequests,
        signing_kid: this.signingKid,
      });
    }
    if (req.method !== 'POST') return send(res, 405, { error: 'method_not_allowed' });
    const body = await readJson(req);
    switch (path) {
      case '/control/client': {
        if (typeof body.client_id !== 'string' || !Array.isArray(body.redirect_uris)) {
          return send(res, 400, { error: 'client_id and redirect_uris required' });
        }
        this.clients.set(body.client_id, {
          secret: body.client_secret ?? '', redirectUris: new Set(body.redirect_uris),
        });
        return send(res, 204);
      }
      case '/control/next': {
        if (body.misbehave != null && !MISBEHAVIOURS.has(body.misbehave)) {
          return send(res, 400, { error: `unknown misbehave ${body.misbehave}` });
        }
        this.nextProfile = { claims: body.claims ?? {}, misbehave: body.misbehave ?? null };
        return send(res, 204);
      }
      case '/control/rotate':
        return send(res, 200, await this.rotate(Boolean(body.retire_old)));
      case '/control/reset':
        this.reset();
        return send(res, 204);
      default:
        return send(res, 404, { error: 'not_found' });
    }
  }

  async handle(req, res) {
    const url = new URL(req.url, this.issuer.url);
    const path = url.pathname;
    try {
      if (path.startsWith('/control/')) return await this.control(req, res, path);
      if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
        this.discoveryFetches++;
        return send(res, 200, this.discovery(), { 'Cache-Control': 'public, max-age=3600' });
      }
      if (req.method === 'GET' && path === '/jwks') {
        this.jwksFetches++;
        return send(res, 200, { keys: this.issuer.keys.toJSON() });
      }
      if (req.method === 'GET' && path === '/authorize') return this.authorize(req, res, url);
      if (req.method === 'POST' && path === '/token') return await this.token(req, res);
      return send(res, 404, { error: 'not_found' });
    } catch (err) {
      console.error(err);
      return send(res, 500, { error: 'server_error', error_description: String(err.message ?? err) });
    }
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const provider = new Provider(opts);
  await provider.init();
  const server = createServer((req, res) => { provider.handle(req, res); });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  provider.issuer.url = `http://127.0.0.1:${port}`;
  provider.foreign.url = provider.issuer.url;
  process.stdout.write(`${JSON.stringify({ port, issuer: provider.issuer.url })}\n`);
  const stop = () => { server.close(() => process.exit(0)); server.closeAllConnections(); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
