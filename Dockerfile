# The operator image that config/manager deploys (`opsec-operator:dev`):
#   docker build -t opsec-operator:dev .
# Not built in CI: these machines have no container engine. Base images are pinned by digest,
# so a rebuild takes the bytes that were reviewed, not whatever a tag points at that day; move
# a digest on purpose, with the tag beside it.
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin opsec-operator

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/opsec-operator /usr/local/bin/opsec-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/opsec-operator"]
CMD ["run", "--log-format", "json"]
