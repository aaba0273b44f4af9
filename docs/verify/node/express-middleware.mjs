// An Express middleware that lets a request through only with an unlock token for the item in
// its path, e.g. app.get('/articles/:item', requireUnlock({ ... }), handler). It needs only jose
// (Express 4 or 5 provides req, res and next).
//
//     const unlocked = requireUnlock({
//       jwksUrl: 'https://pay.example.com/.well-known/jwks.json',
//       issuer: 'https://pay.example.com',
//       site: 'site_…',
//     });
//     app.get('/articles/:item', unlocked, (req, res) => res.json({ item: req.unlock.sub }));
import { createRemoteJWKSet, jwtVerify } from 'jose';

const CLAIMS = ['iss', 'aud', 'sub', 'jti', 'iat', 'exp', 'livemode', 'wlt'];
// jose's codes for a JWKS it could not fetch or read (ERR_JOSE_GENERIC: not a 200)
const JWKS_TROUBLE = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

export function requireUnlock({ jwksUrl, issuer, site, itemParam = 'item' }) {
  // One key set for the process: jose keeps it in memory for 10 minutes and fetches it again
  // when a token names an unknown kid (at most every 30 seconds, so forged kids cost little).
  const keys = createRemoteJWKSet(new URL(jwksUrl));
  return async (req, res, next) => {
    const item = req.params[itemParam];
    if (item === undefined) return next(new Error(`requireUnlock: the route has no :${itemParam}`)); // else any item passes
    const [scheme, token] = (req.get('authorization') ?? '').split(' ');
    if (scheme !== 'Bearer' || !token) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({ error: 'an unlock token is required' });
      return;
    }
    try {
      const { payload } = await jwtVerify(token, keys, {
        algorithms: ['EdDSA'],
        issuer,
        audience: site,
        subject: item,
        requiredClaims: CLAIMS,
        clockTolerance: 30, // seconds the issuer's clock and ours may differ
      });
      req.unlock = payload; // claims: sub is the item, jti the purchase, wlt the reader's pseudonym
    } catch (err) {
      // A JWKS we cannot get is our problem, not the reader's: Express answers 500.
      if (!err.code || JWKS_TROUBLE.has(err.code)) return next(err);
      res.status(401).set('WWW-Authenticate', 'Bearer error="invalid_token"').json({ error: err.code });
      return;
    }
    next();
  };
}
