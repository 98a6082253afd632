#!/bin/sh
# Starts the image's service (`python -m <module>`, the module named in /opt/vdo/service-module).
#
# A setting may be given as a file (a Docker or Kubernetes secret): NAME_FILE=/run/secrets/x
# sets NAME to the file's content, unless NAME is set already. So a key or a database URL
# with its password is never written into the image, the compose file or the pod's spec.
set -eu
for name in $(env | sed -n 's/^\([A-Z][A-Z0-9_]*\)_FILE=.*$/\1/p'); do
    eval "file=\${${name}_FILE}"
    eval "current=\${${name}:-}"
    if [ -z "$current" ]; then
        if [ ! -r "$file" ]; then
            echo "vdo: ${name}_FILE names $file, which cannot be read" >&2
            exit 2
        fi
        value=$(cat "$file")
        export "$name=$value"
    fi
    unset "${name}_FILE"
done
exec /opt/vdo/bin/python -m "$(cat /opt/vdo/service-module)" "$@"
