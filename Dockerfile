# USSD Lightning wallet: production image.
#
#   docker build -t ussd-wallet .
#   docker run --rm -p 8000:8000 --env-file .env ussd-wallet
#
# With no environment at all the container runs the embedded default (SQLite inside the
# container, mock Lightning, demo users): fine for a look, gone with the container. Production
# passes APP_ENV=production, DATABASE_URL (MySQL), PIN_PEPPER, DEMO_MODE=0 and a Lightning
# backend; see .env.example. Schema: run `flask --app app db-upgrade` (the migrations) once before the first start.
# (`satspesa db-upgrade` is the same command where the project is installed with pip.)

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

# An unprivileged user WITH a home directory: hyperon (MeTTa) creates its config directory under
# $HOME/.config/metta on first use, and gunicorn puts its control socket under $HOME/.gunicorn.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first, so editing the code does not reinstall them: the runtime lock (the versions
# the tests ran with, no test tools), each file checked against its hash. Every one ships a
# manylinux wheel for CPython 3.11 (hyperon, coincurve), so no compiler is needed.
COPY requirements.lock .
RUN pip install --no-cache-dir --require-hashes --only-binary :all: -r requirements.lock

# The code stays owned by root, read-only to the app user.
COPY . .

# The Flask instance folder holds the embedded SQLite database: the one place `app` writes.
RUN mkdir -p /app/instance && chown app:app /app/instance

USER app

EXPOSE 8000

# slim has no curl: ask the app's own /status with Python's standard library. /status answers
# 503 when the database is down, which urlopen raises as an error -> unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
