// A real, third-party OpenID provider for msal-gateway's tests.
//
// This runs `oidc-provider` (panva; a certified OpenID provider that we did not write) over HTTPS
// on 127.0.0.1, so that the gateway's sign-in is tested against someone else's reading of the
// standards instead of only against our own Entra emulator. It is started and stopped by
// tests/support/third_party_op.py, which also makes the TLS certificate and this configuration.
//
// Usage: node server.mjs <config.json> <ready-fd>
//
// The config file (written by the Python side) holds:
//   tls_cert, tls_key   PEM paths (certificate chain, private key) for the HTTPS listener
//   mount               path prefix, e.g. "/op": MSAL's oidc_authority needs a path segment
//   client              { client_id, client_secret, redirect_uris, post_logout_redirect_uris }
//   registration_token  initial access token for dynamic client registration (RFC 7591)
//   refresh_token_without_offline_access  optional boolean, see issueRefreshToken below
//
// Readiness: we listen on port 0 (the kernel picks a free port, so there is no race with other
// processes), build the issuer from the real port, then write ONE JSON line {"issuer", "port"} to
// <ready-fd>, a pipe the Python side waits on. stdout and stderr are left to logs: oidc-provider
// prints notices on stdout and warnings on stderr.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, readFileSync, writeSync } from 'node:fs';
import { createServer } from 'node:https';

import Provider from 'oidc-provider';

const [configPath, readyFd] = process.argv.slice(2);
const config = JSON.parse(readFileSync(configPath, 'utf8'));
const mount = config.mount;

// Made-up but stable profile claims for any account id typed at the dev login page:
// "alice" -> sub "alice", preferred_username/email "alice@example.test", name "Alice".
function profileOf(accountId) {
  const address = `${accountId}@example.test`;
  return {
    preferred_username: address,
    email: address,
    email_verified: true,
    name: accountId.charAt(0).toUpperCase() + accountId.slice(1),
  };
}

// A fresh RS256 signing key per run: oidc-provider's built-in development key is public.
const signingKey = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: randomBytes(8).toString('hex'),
  alg: 'RS256',
  use: 'sig',
};

function providerConfiguration() {
  const { client } = config;
  return {
    clients: [
      {
        client_id: client.client_id,
        client_secret: client.client_secret,
        redirect_uris: client.redirect_uris,
        post_logout_redirect_uris: client.post_logout_redirect_uris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        // MSAL sends a string client_credential as client_secret in the form body.
        token_endpoint_auth_method: 'client_secret_post',
        id_token_signed_response_alg: 'RS256',
      },
    ],
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    // MSAL only ever asks for "openid profile offline_access" (plus API scopes), so the profile
    // scope also carries email: the gateway forwards it (X-Forwarded-Email). The email scope
    // exists too, for clients that ask for it.
    claims: {
      openid: ['sub'],
      profile: ['name', 'preferred_username', 'email', 'email_verified'],
      email: ['email', 'email_verified'],
    },
    // By default oidc-provider puts scope-derived claims only in userinfo when an access token
    // is issued too (OIDC Core 5.4). The gateway reads identity from the id_token, like Entra's.
    conformIdTokenClaims: false,
    async findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return { sub, ...profileOf(sub) };
        },
      };
    },
    // MSAL always sends PKCE (S256); requiring it proves that it does.
    pkce: { required: () => true },
    features: {
      // Built-in login page (any login, any password) and consent page.
      devInteractions: { enabled: true },
      // end_session_endpoint (RP-initiated logout) for the gateway's sign-out.
      rpInitiatedLogout: { enabled: true },
      // Lets a test register another client when its redirect URI is only known later.
      registration: { enabled: true, initialAccessToken: config.registration_token },
    },
    // oidc-provider's default policy, kept on purpose: a refresh token is issued only when
    // offline_access was granted, and offline_access is dropped from an authorization request
    // unless it also has prompt=consent (OIDC Core 11). MSAL always asks for offline_access, so
    // sign-in must send prompt=consent to get a refresh token. The option below switches to the
    // other policy seen in the wild, a refresh token without offline_access, for which MSAL's
    // refresh (which always asks for offline_access) gets invalid_scope.
    ...(config.refresh_token_without_offline_access && {
      async issueRefreshToken(ctx, client) {
        return client.grantTypeAllowed('refresh_token');
      },
    }),
  };
}

const server = createServer({
  cert: readFileSync(config.tls_cert),
  key: readFileSync(config.tls_key),
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `https://127.0.0.1:${port}${mount}`;
  const provider = new Provider(issuer, providerConfiguration());
  const callback = provider.callback();

  // oidc-provider reports errors as events and logs nothing itself. Print them, so that the
  // Python side can show them when a test fails (ThirdPartyOP.log()).
  provider.on('server_error', (ctx, err) => console.error('server_error:', err));
  for (const event of ['authorization.error', 'grant.error', 'end_session.error']) {
    provider.on(event, (ctx, err) => {
      console.error(`${event}: ${err.message}`, err.error_description ?? '');
    });
  }

  // Mount the provider under `mount` the way connect/express do: strip the prefix from req.url
  // and keep the full path in req.originalUrl, from which oidc-provider builds its own URLs.
  server.on('request', (req, res) => {
    if (req.url.startsWith(`${mount}/`)) {
      req.originalUrl = req.url;
      req.url = req.url.slice(mount.length);
      callback(req, res);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });

  writeSync(Number(readyFd), `${JSON.stringify({ issuer, port })}\n`);
  closeSync(Number(readyFd));
});

// Exit when the Python side goes away, even if it could not send a signal (stdin is its pipe).
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
