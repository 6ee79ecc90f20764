"""Scale out on Ray (the optional extra ``longvid[ray]``): evaluation sweeps over actors that each hold one model
(``longvid eval NAME --ray``, `longvid.cluster.eval`) and serving replicas behind Ray Serve (``longvid serve
--replicas N --ray``, `longvid.cluster.serve`). Nothing here is imported unless ``--ray`` is given."""
