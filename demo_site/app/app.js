// The publisher's app: it hosts no content at Coinslot, it turns a feature on. A real app
// would send detail.token to its server and verify it there against /.well-known/jwks.json.
document.addEventListener('coinslot:unlocked', function (event) {
  if (event.detail.item !== 'extra-storage') return;
  document.getElementById('storage').classList.add('upgraded');
  document.getElementById('storage-text').textContent = '9.2 GB of 20 GB used — extra storage is on';
});
