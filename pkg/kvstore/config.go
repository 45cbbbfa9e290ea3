package kvstore

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// validBucket is nats.go's pattern of a bucket name.
var validBucket = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// StreamConfig returns the configuration of the stream of bucket cfg, as nats.go
// v1.55.0's CreateKeyValue builds it (prepareKeyValueConfig in jetstream/kv.go),
// for a caller that must set what KeyValueConfig does not carry (FirstSeq).
// TestStreamConfigIsNatsGos compares the two, so that a nats.go upgrade that
// changes the configuration shows up. Mirrors and sources are not supported.
func StreamConfig(cfg jetstream.KeyValueConfig) (jetstream.StreamConfig, error) {
	if cfg.Mirror != nil || len(cfg.Sources) > 0 {
		return jetstream.StreamConfig{}, errors.New("kvstore: a bucket with a mirror or sources is not supported")
	}
	if !validBucket.MatchString(cfg.Bucket) {
		return jetstream.StreamConfig{}, jetstream.ErrInvalidBucketName
	}
	history := int64(1)
	if cfg.History > 0 {
		if cfg.History > jetstream.KeyValueMaxHistory {
			return jetstream.StreamConfig{}, jetstream.ErrHistoryTooLarge
		}
		history = int64(cfg.History)
	}
	// nats.go spells out the server's defaults, so that an "already in use"
	// answer can be compared with the stream's configuration.
	maxBytes := cfg.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	maxMsgSize := cfg.MaxValueSize
	if maxMsgSize == 0 {
		maxMsgSize = -1
	}
	duplicates := 2 * time.Minute
	if cfg.TTL > 0 && cfg.TTL < duplicates {
		duplicates = cfg.TTL
	}
	var compression jetstream.StoreCompression
	if cfg.Compression {
		compression = jetstream.S2Compression
	}
	return jetstream.StreamConfig{
		Name:                   fmt.Sprintf("KV_%s", cfg.Bucket),
		Description:            cfg.Description,
		Subjects:               []string{fmt.Sprintf("$KV.%s.>", cfg.Bucket)},
		MaxMsgsPerSubject:      history,
		MaxBytes:               maxBytes,
		MaxAge:                 cfg.TTL,
		MaxMsgSize:             maxMsgSize,
		Storage:                cfg.Storage,
		Replicas:               max(cfg.Replicas, 1),
		Placement:              cfg.Placement,
		AllowRollup:            true,
		DenyDelete:             true,
		Duplicates:             duplicates,
		MaxMsgs:                -1,
		MaxConsumers:           -1,
		AllowDirect:            true,
		RePublish:              cfg.RePublish,
		Compression:            compression,
		Discard:                jetstream.DiscardNew,
		AllowMsgTTL:            cfg.LimitMarkerTTL != 0,
		SubjectDeleteMarkerTTL: cfg.LimitMarkerTTL,
		Metadata:               cfg.Metadata,
	}, nil
}
