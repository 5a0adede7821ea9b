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
READMIT_FIX = (
    "on the master: packfleet manager worker connect WORKER --token, then on this worker: "
    "packfleet worker join TOKEN"
)
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
