"""QueryAgent's agent: the nodes, the drafter, the catalog, its search and its fitted models."""

import os

# OpenMP's idle threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``), unless the user
# set a policy: set on the package's import, before torch loads its OpenMP runtime (it reads the
# variable once), so the fit, the MiniLM query embedding and the drafter all get it. Spinning is
# fine on free cores but ruinous when a core is taken: on the 2-core development machine under a
# load of 7, one MiniLM query embedding took 0.14-1.4 s with the default policy at 2 threads and
# 0.03-0.06 s with PASSIVE (agent.ranking.threads has the fit's figures). No number changes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
