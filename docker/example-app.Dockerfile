# The example web app (crates/example-app) as an image, built like docker/Dockerfile from the
# static binary docker/build.sh prepares; docker/compose.yaml runs two replicas of it.
FROM scratch

COPY passwd group nsswitch.conf /etc/
COPY sessiond-example-app /usr/local/bin/

USER 65532:65532

# Every interface of the container; SESSIOND_ADDR names the sessiond service, resolved by
# Docker's DNS (see nsswitch.conf).
ENV EXAMPLE_APP_LISTEN=0.0.0.0:8000
EXPOSE 8000

# PID 1, stops gracefully on SIGTERM.
ENTRYPOINT ["/usr/local/bin/sessiond-example-app"]
