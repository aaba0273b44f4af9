<?php
// Verify a Coinslot unlock token with PHP's own sodium extension (PHP 7.2 or later, no Composer):
//
//     php verify.php JWKS_URL ISSUER SITE ITEM TOKEN
//
// Prints the token's claims and exits 0 when the token lets a reader see ITEM of SITE now;
// otherwise exits 1 with one line saying why. The JWKS is kept in a temporary file for five
// minutes and fetched again at once when a token names a key it lacks (the keys were rotated).
declare(strict_types=1);

const CACHE_S = 300;  // as long as the server's Cache-Control lets the JWKS be kept
const LEEWAY_S = 30;  // the issuer's clock and ours may differ this much
const CLAIMS = ['iss', 'aud', 'sub', 'jti', 'iat', 'exp', 'livemode', 'wlt'];

final class Refused extends Exception {}

function b64url_decode(string $data): string
{
    $bytes = base64_decode(strtr($data, '-_', '+/'), true);
    if ($bytes === false || rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=') !== $data) {
        throw new Refused('not base64url');  // strictly one encoding per value, no padding or stray bits
    }
    return $bytes;
}

function json_object(string $json): array
{
    try {
        $value = json_decode($json, true, 8, JSON_THROW_ON_ERROR);
    } catch (JsonException $e) {
        throw new Refused('not JSON: ' . $e->getMessage());
    }
    if (!is_array($value) || array_is_list($value)) {  // array_is_list: PHP 8.1
        throw new Refused('not a JSON object');
    }
    return $value;
}

/** The raw Ed25519 public key named $kid: from the cached JWKS, or fetched again if it lacks it. */
function public_key(string $jwksUrl, string $kid): string
{
    $cache = sys_get_temp_dir() . '/coinslot-jwks-' . substr(hash('sha256', $jwksUrl), 0, 16) . '.json';
    $stale = !is_file($cache) || time() - filemtime($cache) >= CACHE_S;
    foreach ($stale ? [true] : [false, true] as $fetch) {
        if ($fetch) {
            $context = stream_context_create(['http' => ['timeout' => 5]]);
            $body = @file_get_contents($jwksUrl, false, $context);
            if ($body === false) {
                throw new Refused("cannot fetch $jwksUrl: " . (error_get_last()['message'] ?? 'unknown error'));
            }
            $temporary = "$cache." . getmypid();
            file_put_contents($temporary, $body);
            rename($temporary, $cache);  // whole or not at all, for a verifier running beside this one
        }
        foreach (json_object((string) file_get_contents($cache))['keys'] ?? [] as $jwk) {
            if (($jwk['kid'] ?? null) === $kid && ($jwk['kty'] ?? null) === 'OKP' && ($jwk['crv'] ?? null) === 'Ed25519') {
                $key = b64url_decode((string) ($jwk['x'] ?? ''));
                if (strlen($key) !== SODIUM_CRYPTO_SIGN_PUBLICKEYBYTES) {
                    throw new Refused("key $kid is not an Ed25519 public key");
                }
                return $key;
            }
        }
    }
    throw new Refused("no key '$kid' in $jwksUrl");
}

function verify(string $jwksUrl, string $issuer, string $site, string $item, string $token): array
{
    $parts = explode('.', $token);
    if (count($parts) !== 3) {
        throw new Refused('not a compact JWS (three dot-separated parts)');
    }
    [$header64, $payload64, $signature64] = $parts;
    $header = json_object(b64url_decode($header64));
    if (($header['alg'] ?? null) !== 'EdDSA') {  // never trust another alg the header asks for
        throw new Refused('alg is not EdDSA');
    }
    if (!is_string($header['kid'] ?? null)) {
        throw new Refused('the header names no kid');
    }
    $signature = b64url_decode($signature64);
    $key = public_key($jwksUrl, $header['kid']);
    if (strlen($signature) !== SODIUM_CRYPTO_SIGN_BYTES
        || !sodium_crypto_sign_verify_detached($signature, "$header64.$payload64", $key)) {
        throw new Refused('signature does not verify');
    }
    $claims = json_object(b64url_decode($payload64));
    foreach (CLAIMS as $claim) {
        if (!array_key_exists($claim, $claims)) {
            throw new Refused("the '$claim' claim is missing");
        }
    }
    if ($claims['iss'] !== $issuer) {
        throw new Refused("issuer is not $issuer");
    }
    if ($claims['aud'] !== $site) {
        throw new Refused("audience is not site $site");
    }
    if ($claims['sub'] !== $item) {
        throw new Refused("subject is not item $item");
    }
    if (!is_int($claims['exp']) || $claims['exp'] <= time() - LEEWAY_S) {
        throw new Refused('expired at ' . json_encode($claims['exp']));
    }
    return $claims;
}

if ($argc !== 6) {
    fwrite(STDERR, "usage: php verify.php JWKS_URL ISSUER SITE ITEM TOKEN\n");
    exit(2);
}
try {
    echo json_encode(verify(...array_slice($argv, 1))), "\n";
} catch (Refused $e) {
    fwrite(STDERR, 'refused: ' . $e->getMessage() . "\n");
    exit(1);
}
