# Build, install and package berth. `make build` then, as root, `make install`.
#   make build        release binaries: target/release/berthd, berth-monitor, berth-pump
#   make install      scripts/install.sh (PREFIX=/usr/local, DESTDIR= for a staging root)
#   make uninstall    scripts/install.sh --uninstall: removes what the install recorded
#   make image        the berth-deploy image for manifests/berth-deploy.yaml (IMAGE=...)
#   make test-manifests  tests/manifests.sh (no cargo build needed)

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
DOCKER ?= docker
IMAGE ?= localhost:5000/berth-deploy:dev
BIN_DIR_SRC ?= target/release
IMAGE_CONTEXT ?= target/berth-deploy-image
INSTALL_FLAGS ?=

.PHONY: build install uninstall image image-context test-manifests

build:
	$(CARGO) build --release --locked -p berthd -p berth-runtime

install:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" BIN_DIR_SRC="$(abspath $(BIN_DIR_SRC))" scripts/install.sh $(INSTALL_FLAGS)

uninstall:
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh --uninstall $(INSTALL_FLAGS)

# The build context of manifests/berth-deploy.Dockerfile, without building.
image-context:
	rm -rf "$(IMAGE_CONTEXT)"
	mkdir -p "$(IMAGE_CONTEXT)/bin" "$(IMAGE_CONTEXT)/scripts" "$(IMAGE_CONTEXT)/manifests"
	cp "$(BIN_DIR_SRC)/berthd" "$(BIN_DIR_SRC)/berth-monitor" "$(BIN_DIR_SRC)/berth-pump" "$(IMAGE_CONTEXT)/bin/"
	cp scripts/install.sh scripts/deploy.sh "$(IMAGE_CONTEXT)/scripts/"
	cp manifests/berthd.service manifests/config.toml manifests/crictl.yaml manifests/10-berth.conflist "$(IMAGE_CONTEXT)/manifests/"

image: build
	$(MAKE) image-context
	$(DOCKER) build -t "$(IMAGE)" -f manifests/berth-deploy.Dockerfile "$(IMAGE_CONTEXT)"

test-manifests:
	tests/manifests.sh
