// Verify a Coinslot unlock token with jose (npm ci, then):
//
//     node verify.mjs JWKS_URL ISSUER SITE ITEM TOKEN
//
// Prints the token's claims and exits 0 when the token lets a reader see ITEM of SITE now;
// otherwise exits 1 with one line saying why. The JWKS is kept in a temporary file for five
// minutes and fetched again at once when a token names a key it lacks (the keys were rotated).
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRemoteJWKSet, jwksCache, jwtVerify } from 'jose';

const CLAIMS = ['iss', 'aud', 'sub', 'jti', 'iat', 'exp', 'livemode', 'wlt'];

const args = process.argv.slice(2);
if (args.length !== 5) {
  console.error('usage: node verify.mjs JWKS_URL ISSUER SITE ITEM TOKEN');
  process.exit(2);
}
const [jwksUrl, issuer, site, item, token] = args;

const name = createHash('sha256').update(jwksUrl).digest('hex').slice(0, 16);
const cacheFile = join(tmpdir(), `coinslot-jwks-${name}.json`);
// The file holds the JWKS as served (the Python and PHP examples read it too); jose's cache
// object adds when it was fetched.
let cache = {};
try {
  cache = { uat: statSync(cacheFile).mtimeMs, jwks: JSON.parse(readFileSync(cacheFile, 'utf8')) };
} catch {
  // no cache yet, or a broken one: jose fetches the JWKS
}
const fetchedAt = cache.uat;
const keys = createRemoteJWKSet(new URL(jwksUrl), {
  [jwksCache]: cache, // jose reads the keys from it and writes what it fetches into it
  cacheMaxAge: 5 * 60 * 1000, // as long as the server's Cache-Control lets the JWKS be kept
  cooldownDuration: 0, // one run checks one token, so an unknown kid may always fetch again
});

try {
  const { payload } = await jwtVerify(token, keys, {
    algorithms: ['EdDSA'], // never what the token's header asks for
    issuer,
    audience: site,
    subject: item,
    requiredClaims: CLAIMS,
    clockTolerance: 30, // seconds the issuer's clock and ours may differ
  });
  console.log(JSON.stringify(payload));
} catch (err) {
  console.error(`refused: ${err.code ?? err.name}: ${err.message}`);
  process.exitCode = 1;
} finally {
  if (cache.uat !== fetchedAt) {
    const temporary = `${cacheFile}.${process.pid}`;
    writeFileSync(temporary, JSON.stringify(cache.jwks));
    renameSync(temporary, cacheFile); // whole or not at all, for a verifier running beside this one
  }
}
