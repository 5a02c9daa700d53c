// An app that reacts to oomhero: SIGUSR1 (warning) drops its cache and stops taking new work,
// SIGUSR2 (critical) fails readiness and sheds the work it has. Node runs 'SIGUSR1' listeners
// on the event loop, like any callback. Start node without --inspect: a node started with it
// (or sent SIGUSR1 before a listener exists) treats SIGUSR1 as "start the debugger".
'use strict';

let cache = new Map();
let accepting = true;
let ready = true;

process.on('SIGUSR1', () => {
  if (!accepting) return;
  accepting = false;
  const dropped = cache.size;
  cache = new Map();
  console.log(`warning: dropped ${dropped} cache entries, not accepting new work`);
});

process.on('SIGUSR2', () => {
  if (!ready) return;
  ready = false;
  // A real app would answer 500 on its readiness endpoint and drain its queue here.
  console.log('critical: readiness failing, shedding load');
});

console.log('started');
setInterval(() => {
  if (accepting) cache.set(cache.size, Buffer.alloc(4096)); // stands in for serving a request
}, 50);
