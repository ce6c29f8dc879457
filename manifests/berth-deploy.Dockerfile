# The image the DaemonSets of manifests/berth-deploy.yaml run: berth's
# binaries, scripts/install.sh, scripts/deploy.sh and the files they
# install. Build it with `make image` (which stages its context in
# target/berth-deploy-image/), then push it where the nodes can pull it:
# berth pulls it too, when the kubelet already runs on berth.
#
# The binaries run on the node, not in this image: the node needs the glibc
# they were built against (Debian 12's 2.36 or newer) and libseccomp2.
ARG BASE=debian:12-slim
FROM ${BASE}
# nsenter and flock are in util-linux (essential in Debian); curl labels the
# node through the API server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*
COPY bin/berthd bin/berth-monitor bin/berth-pump /opt/berth/bin/
COPY scripts/install.sh scripts/deploy.sh /opt/berth/scripts/
COPY manifests/berthd.service manifests/config.toml manifests/crictl.yaml manifests/10-berth.conflist /opt/berth/manifests/
ENV BIN_DIR_SRC=/opt/berth/bin
ENTRYPOINT ["/opt/berth/scripts/deploy.sh"]
CMD ["install", "--wait"]
