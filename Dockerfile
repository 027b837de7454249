# mdi in a container: build with the Rust toolchain, run on a slim Debian.
#   docker build -t mdi .
#   docker run --rm --network host --shm-size 2g mdi                      # mdpub demo
#   docker run --rm --network host --shm-size 2g mdi mdpub run --config /etc/mdi/mdpub.toml
# See deploy/README.md and deploy/compose.yaml (publisher, receiver, archiver).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mdi-publisher -p mdi-tools -p mdi-archive-cli --bins \
    && mkdir /out \
    && cp target/release/mdpub target/release/mdrecv target/release/mdstat \
          target/release/mdtail target/release/mdarchive /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd -r mdi && useradd -r -g mdi -s /usr/sbin/nologin mdi
COPY --from=build /out/ /usr/local/bin/
COPY config/example.toml /etc/mdi/mdpub.toml
USER mdi
# rings live in the container's /dev/shm: give it room (--shm-size, compose shm_size)
ENV MDI_SHM_DIR=/dev/shm/mdi
# healthy while every ring's writer lives (docs/operations.md, "Health checks")
HEALTHCHECK --interval=10s --timeout=3s CMD ["mdstat", "--check"]
CMD ["mdpub", "--metrics", "0.0.0.0:9464", "demo"]
