"""Operations tooling: the local Kafka broker from Maven jars, a local Spark standalone cluster and the
spark-submit packaging."""
