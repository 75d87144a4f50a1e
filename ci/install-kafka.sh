# Sourced by ci/install.sh: the Kafka broker's runtime jars (ci/kafka/pom.xml)
# from Maven, copied once into a cache keyed by the pom's hash; the tests run
# the broker from them on the machine's JDK 17 (tests/src/kafka.rs).
# Exports NETTAP_KAFKA_LIBS.
kafka_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kafka_sum="$(sha256sum "$kafka_root/ci/kafka/pom.xml" | cut -c1-16)"
export NETTAP_KAFKA_LIBS="${NETTAP_KAFKA_LIBS:-$HOME/.cache/nettap/kafka/$kafka_sum/libs}"
if [ ! -e "$NETTAP_KAFKA_LIBS/.complete" ]; then
  echo "ci/install-kafka.sh: fetching the Kafka broker's jars (once)"
  rm -rf "$NETTAP_KAFKA_LIBS"
  (cd "$kafka_root/ci/kafka" && JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64 \
    mvn -q -B -Dstyle.color=never -Dmaven.repo.local="${NETTAP_M2:-$HOME/.cache/nettap/m2}" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$NETTAP_KAFKA_LIBS" >/dev/null)
  touch "$NETTAP_KAFKA_LIBS/.complete"
fi
