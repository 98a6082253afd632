#!/bin/sh
# What a service is made of, for the image builds: its workspace package, the members to
# install and the module it runs as (`python -m`).
#   service-package.sh package|members|module SERVICE
set -eu
what=$1
service=$2
case "$service" in
    relay) package=vdo-kernel members="./kernel" module=vdo_kernel.relay ;;
    planner | builder | tester | reviewer)
        package="vdo-$service"
        members="./kernel ./models ./services/$service"
        module="vdo_$service" ;;
    gateway | sandbox | projector | scheduler)
        package="vdo-$service"
        members="./kernel ./services/$service"
        module="vdo_$service" ;;
    *) echo "unknown service: $service" >&2; exit 2 ;;
esac
case "$what" in
    package) echo "$package" ;;
    members) echo "$members" ;;
    module) echo "$module" ;;
    *) echo "usage: $0 package|members|module SERVICE" >&2; exit 2 ;;
esac
