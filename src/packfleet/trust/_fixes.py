"""The commands the trust rules name as fixes, each written once."""

from __future__ import annotations

#: Puts the master's exported certificate into a node's Root store, where pins are looked up.
IMPORT_MASTER = "packfleet cert import master.cer --store Root"
#: A master certificate near or past its end is replaced by a rotation, which the workers follow.
ROTATE_MASTER = (
    "on the master: packfleet manager rotate master-cert (or the seed's 'change the master "
    "certificate' steps)"
)
#: How a worker whose certificate the master no longer accepts (expired, revoked) gets back in: its
#: own certificate cannot carry a renewal request any more, so the master admits it again.
READMIT = (
    "on the master: packfleet manager worker connect {worker} --token, then on this worker: "
    "packfleet worker join TOKEN"
)
READMIT_FIX = READMIT.format(worker="WORKER")
#: A worker certificate near its end is renewed over the old one while the master still accepts it
#: (the running agent does it by itself two thirds into the certificate's life).
RENEW_WORKER = "packfleet worker rotate-cert"
#: ``master init`` run again with ``--existing-cert`` keeps the served certificate and makes a new admin
#: certificate when the old one is expired; without it, it would replace the master certificate too.
#: ``--port`` and ``--address`` default to 8391 and the first CN, so they are passed to keep the settings.
NEW_ADMIN_FIX = (
    "on the master: packfleet master init --existing-cert SSLCERTTHUMBPRINT --port PORTNUMBER "
    "--address MASTERADDRESS, with the values packfleet settings show master prints"
)
#: Certificates are back-dated five minutes; a clock further off than that makes them "not yet valid".
SYNC_CLOCKS = "synchronise the clocks: timedatectl set-ntp true (on the master and on this machine)"
#: How the master comes to trust a worker's certificate: the seed's "install the client certificate into
#: the Root store of the master", done by the master so its catalog knows the worker too.
TRUST_WORKER = (
    "on the master: packfleet manager worker add --cert worker.cer (the seed's 'install the client "
    "certificate into the Root store of the master')"
)
#: How the master comes to trust an admin certificate; ``{thumbprint}`` is the certificate's.
TRUST_ADMIN = (
    "packfleet cert export {thumbprint} --store My --out admin.cer, then on the master: packfleet cert "
    "import admin.cer --store Root"
)
#: A Root certificate the master will never accept from a client only hides the ones it does.
DELETE_FROM_ROOT = "packfleet cert delete --store Root {thumbprint}"
#: A certificate without the purpose its TLS role needs (serverAuth, clientAuth) is made again.
RECREATE_CERT = "re-create it with packfleet cert create, which sets serverAuth and clientAuth"
