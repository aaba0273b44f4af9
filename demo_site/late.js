// The publisher's own script: adds a paid item after load, and listens for unlocks through
// the queue, which works even before coinslot.js has loaded.
(window.coinslot = window.coinslot || []).push(['on', 'unlocked', function (detail) {
  document.getElementById('publisher-log').textContent = 'Publisher saw the unlock of ' + detail.item + '.';
}]);
document.getElementById('load-live').addEventListener('click', function () {
  var item = document.createElement('div');
  item.className = 'coinslot-locked'; // the part the page's JSON-LD marks as paid
  item.setAttribute('data-coinslot-item', 'article-council');
  item.innerHTML = '<p class="teaser">21:00 — The vote is about to begin…</p>';
  document.getElementById('live').append(item);
  this.disabled = true;
});
