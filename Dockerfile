# The production image: the sidecar alone, non-root, listening on 0.0.0.0:8000.
#   docker build -t shop-edge .
#   docker run -p 8000:8000 -v shop-edge-data:/var/lib/shop-edge \
#       -e EDGE_UPSTREAM=http://shop:8080 -e EDGE_SECRET=... shop-edge
# The merchant's rules and snippets: mount them on /srv/edge/rules and /srv/edge/snippets
# (without them the shipped segment library is loaded and nothing is placed).
FROM python:3.11-slim AS build
WORKDIR /src
# Dependencies first, in their own layer: a source change does not rebuild them.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
RUN mkdir -p edge rules snippets static && touch edge/__init__.py \
    && pip wheel --no-cache-dir --wheel-dir /wheels '.[redis,zstd]' \
    && rm -f /wheels/shop_edge-*.whl
# Then the package itself, with the shipped rules, snippets and browser snippet
# copied into it by setup.py (edge/shipped.py).
COPY edge ./edge
COPY rules ./rules
COPY snippets ./snippets
COPY static ./static
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 edge \
    && useradd --system --uid 10001 --gid 10001 --home-dir /srv/edge edge \
    && mkdir -p /srv/edge /var/lib/shop-edge \
    && chown edge:edge /srv/edge /var/lib/shop-edge
WORKDIR /srv/edge
COPY --from=build /wheels /wheels
# Exactly the wheels built above (the package and its pinned dependency set), offline.
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
USER 10001:10001
VOLUME ["/var/lib/shop-edge"]
ENV EDGE_HOST=0.0.0.0 \
    EDGE_PORT=8000 \
    EDGE_STORE=sqlite:/var/lib/shop-edge/profiles.db \
    PYTHONUNBUFFERED=1
EXPOSE 8000
# Follows the configured port (EDGE_PORT).
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/_edge/healthz' % os.environ.get('EDGE_PORT', '8000'), timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge"]
CMD ["serve"]
