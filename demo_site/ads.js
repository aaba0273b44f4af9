// A stand-in for a slow third-party script (the e2e test holds it back on purpose).
document.currentScript.insertAdjacentHTML('afterend', '<aside class="ad">Advertisement</aside>');
