# The operator image that config/manager deploys (`opsec-operator:dev`):
#   docker build -t opsec-operator:dev .
# Not built in CI: these machines have no container engine.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin opsec-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/opsec-operator /usr/local/bin/opsec-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/opsec-operator"]
CMD ["run", "--log-format", "json"]
