/* rangersync service worker (classic worker): the worker library and one call.
 *
 * SyncClient.register writes the app shell into this script's URL (`/sw.js?appShell=<JSON>`),
 * so a changed list of files or version is a new worker version: the browser installs it, its
 * install precaches the new list and its activation deletes the old cache. Without `appShell`
 * nothing of the app is cached. An app with a service worker of its own does not need this
 * file: it imports `rangersync-worker.js` and calls `rangersync.listen` itself (see there).
 */
'use strict';

importScripts('rangersync-worker.js');

(function () {
  const options = {};
  const shell = new URL(self.location.href).searchParams.get('appShell');
  if (shell !== null) {
    try {
      options.appShell = JSON.parse(shell);
    } catch (err) {
      console.error(`rangersync: ignoring appShell in the worker URL, it is not JSON: ${err.message}`);
    }
  }
  try {
    self.rangersync.listen(options);
  } catch (err) {
    if (!err || err.code !== 'invalid_config') throw err;
    // A hand-made URL with a bad list: the outbox matters more than opening offline.
    console.error(`${err.message}; listening without an app shell`);
    self.rangersync.listen({});
  }
}());
