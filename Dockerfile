# The production image: the sidecar alone, listening on 0.0.0.0:8000.
#   docker build -t shop-edge .
#   docker run -p 8000:8000 -e EDGE_UPSTREAM=http://shop:8080 shop-edge
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge ./edge
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[redis]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /srv/edge edge
WORKDIR /srv/edge
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels 'shop-edge[redis]' && rm -rf /wheels
COPY rules ./rules
COPY snippets ./snippets
COPY static ./static
USER edge
ENV EDGE_HOST=0.0.0.0 \
    EDGE_PORT=8000 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/_edge/healthz', timeout=2).status != 200)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["edge"]
CMD ["serve"]
