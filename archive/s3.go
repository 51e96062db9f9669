package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// S3Config is where the archive goes in S3 (or an S3-compatible server such
// as MinIO). Credentials come from the standard AWS chain only: environment,
// shared config and credentials files, SSO, web identity, container and
// instance roles.
type S3Config struct {
	Bucket    string // required
	Prefix    string // key prefix before APP/; may be empty; surrounding slashes are ignored
	Region    string // default: the AWS chain's region, else us-east-1
	Endpoint  string // e.g. https://minio.internal:9000; empty for AWS
	PathStyle bool   // bucket in the path instead of the host name (MinIO)
}

// maxObjectSize bounds what get reads back: a segment of 10,000 records is a
// few MiB.
const maxObjectSize = 1 << 30

// s3Store is the archive in an S3 bucket with Object Lock. Every object is
// written with PutObject If-None-Match: "*", an explicit SHA-256 checksum,
// and its own retention (mode and retain-until), so nothing depends on the
// bucket's default rule.
type s3Store struct {
	client *s3.Client
	bucket string
	idle   interface{ CloseIdleConnections() } // nil in tests that build their own client
}

func newS3Store(ctx context.Context, c S3Config, stall time.Duration) (*s3Store, error) {
	if c.Bucket == "" {
		return nil, errors.New("archive: s3 bucket not set")
	}
	opts := []func(*config.LoadOptions) error{
		// The SDK's default CRC32 trailer is refused by some servers and
		// is not the SHA-256 the archive records: send only what we set.
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		// The archiver retries with its own capped backoff; the SDK's
		// client-side retry quota would otherwise keep failing calls
		// for a while after a long outage.
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.RateLimiter = ratelimit.None
				o.MaxAttempts = 3
			})
		}),
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("archive: aws config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// Take the SDK's transport (AWS_CA_BUNDLE and the like already
	// applied) into a client of our own, so Close can drop its idle
	// connections and their goroutines.
	var idle interface{ CloseIdleConnections() }
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		tr := bc.GetTransport()
		// A request sent in full with no answer begun after stall is a hung
		// connection (a stopped server, a dead path): fail the attempt so
		// that it is retried on a new connection, well before the call's
		// RequestTimeout. Sending the body does not count: a slow link is
		// not a hang.
		if stall > 0 {
			tr.ResponseHeaderTimeout = stall
		}
		cfg.HTTPClient = &http.Client{
			Transport: tr,
			// S3 answers a wrong region or endpoint with a redirect;
			// the error is clearer than following it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		idle = tr
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.UsePathStyle = c.PathStyle
	})
	return &s3Store{client: client, bucket: c.Bucket, idle: idle}, nil
}

// closeIdle drops idle keep-alive connections to the server.
func (s *s3Store) closeIdle() {
	if s.idle != nil {
		s.idle.CloseIdleConnections()
	}
}

// check reads the bucket's versioning and Object Lock configuration. A
// bucket that lacks either is refused (an error wrapping ErrRefused);
// any other error is an outage and worth retrying.
func (s *s3Store) check(ctx context.Context) (StoreInfo, error) {
	info := StoreInfo{Kind: "s3"}
	v, err := s.client.GetBucketVersioning(ctx, &s3.GetBucketVersioningInput{Bucket: &s.bucket})
	if err != nil {
		if refusal(err) {
			return info, fmt.Errorf("%w: bucket %s: cannot read versioning: %v", ErrRefused, s.bucket, err)
		}
		return info, fmt.Errorf("bucket %s versioning: %w", s.bucket, err)
	}
	info.Versioning = string(v.Status)
	if info.Versioning == "" {
		info.Versioning = "Unversioned"
	}
	lc, err := s.client.GetObjectLockConfiguration(ctx, &s3.GetObjectLockConfigurationInput{Bucket: &s.bucket})
	switch {
	case apiCode(err) == "ObjectLockConfigurationNotFoundError":
	case err != nil && refusal(err):
		return info, fmt.Errorf("%w: bucket %s: cannot read object lock configuration: %v", ErrRefused, s.bucket, err)
	case err != nil:
		return info, fmt.Errorf("bucket %s object lock: %w", s.bucket, err)
	case lc.ObjectLockConfiguration != nil:
		olc := lc.ObjectLockConfiguration
		info.ObjectLock = olc.ObjectLockEnabled == types.ObjectLockEnabledEnabled
		if olc.Rule != nil && olc.Rule.DefaultRetention != nil {
			d := olc.Rule.DefaultRetention
			info.DefaultMode = string(d.Mode)
			switch {
			case d.Years != nil:
				info.DefaultRetention = strconv.Itoa(int(*d.Years)) + "y"
			case d.Days != nil:
				info.DefaultRetention = strconv.Itoa(int(*d.Days)) + "d"
			}
		}
	}
	if !info.ObjectLock {
		return info, fmt.Errorf("%w: bucket %s does not have Object Lock enabled", ErrRefused, s.bucket)
	}
	if v.Status != types.BucketVersioningStatusEnabled {
		return info, fmt.Errorf("%w: bucket %s versioning is %s, not Enabled", ErrRefused, s.bucket, info.Versioning)
	}
	return info, nil
}

// refusal tells a configuration problem (no such bucket, no permission) from
// an outage: the first will not fix itself by retrying soon.
func refusal(err error) bool {
	switch apiCode(err) {
	case "NoSuchBucket", "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return true
	}
	return false
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func (s *s3Store) putIfAbsent(ctx context.Context, key string, data []byte, lock objectLock) (objectInfo, error) {
	sum := sha256.Sum256(data)
	b64 := base64.StdEncoding.EncodeToString(sum[:])
	in := &s3.PutObjectInput{
		Bucket:            &s.bucket,
		Key:               &key,
		Body:              bytes.NewReader(data),
		ContentLength:     aws.Int64(int64(len(data))),
		ContentType:       aws.String(contentType(key)),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		ChecksumSHA256:    &b64,
		IfNoneMatch:       aws.String("*"),
	}
	if lock.Mode != "" {
		in.ObjectLockMode = types.ObjectLockMode(lock.Mode)
		in.ObjectLockRetainUntilDate = aws.Time(lock.RetainUntil)
	}
	out, err := s.client.PutObject(ctx, in, withPayloadHash(hex.EncodeToString(sum[:])))
	if err != nil {
		if apiCode(err) == "PreconditionFailed" || httpStatus(err) == http.StatusPreconditionFailed {
			return objectInfo{}, errObjectExists
		}
		return objectInfo{}, fmt.Errorf("put s3://%s/%s: %w", s.bucket, key, err)
	}
	if got := aws.ToString(out.ChecksumSHA256); got != "" && got != b64 {
		// The server stored other bytes than we sent.
		return objectInfo{}, fmt.Errorf("put s3://%s/%s: server checksum %s, sent %s", s.bucket, key, got, b64)
	}
	return objectInfo{
		VersionID:      aws.ToString(out.VersionId),
		ChecksumSHA256: b64,
		LockMode:       lock.Mode,
		RetainUntil:    lock.RetainUntil,
	}, nil
}

// withPayloadHash hands SigV4 the SHA-256 already computed for the checksum
// (the same digest, in hex), so a segment is hashed once, not twice: on a
// small CPU hashing is most of the archiver's cost.
func withPayloadHash(hexSum string) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("uapkPayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, hexSum), in)
				}), middleware.Before)
		})
	}
}

func (s *s3Store) get(ctx context.Context, key string) ([]byte, objectInfo, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket:       &s.bucket,
		Key:          &key,
		ChecksumMode: types.ChecksumModeEnabled,
	})
	if err != nil {
		var nsk *types.NoSuchKey
		if errors.As(err, &nsk) || apiCode(err) == "NoSuchKey" || httpStatus(err) == http.StatusNotFound {
			return nil, objectInfo{}, errObjectNotFound
		}
		return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, maxObjectSize+1))
	if err != nil {
		return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: %w", s.bucket, key, err)
	}
	if len(b) > maxObjectSize {
		return nil, objectInfo{}, fmt.Errorf("get s3://%s/%s: larger than %d bytes", s.bucket, key, maxObjectSize)
	}
	sum := sha256.Sum256(b)
	info := objectInfo{
		VersionID:      aws.ToString(out.VersionId),
		ChecksumSHA256: base64.StdEncoding.EncodeToString(sum[:]),
		StoredChecksum: aws.ToString(out.ChecksumSHA256),
		LockMode:       string(out.ObjectLockMode),
		RetainUntil:    aws.ToTime(out.ObjectLockRetainUntilDate),
	}
	if info.LockMode == "" {
		// GetObject leaves the lock headers out without
		// s3:GetObjectRetention on some servers; ask directly.
		r, err := s.client.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{
			Bucket: &s.bucket, Key: &key, VersionId: out.VersionId,
		})
		switch {
		case err == nil && r.Retention != nil:
			info.LockMode = string(r.Retention.Mode)
			info.RetainUntil = aws.ToTime(r.Retention.RetainUntilDate)
		case err != nil && apiCode(err) != "NoSuchObjectLockConfiguration":
			return nil, objectInfo{}, fmt.Errorf("retention of s3://%s/%s: %w", s.bucket, key, err)
		}
	}
	return b, info, nil
}

func (s *s3Store) list(ctx context.Context, prefix string) ([]string, error) {
	if prefix != "" && prefix[len(prefix)-1] != '/' {
		prefix += "/"
	}
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", s.bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	slices.Sort(keys)
	return keys, nil
}

func contentType(key string) string {
	if len(key) > 6 && key[len(key)-6:] == ".jsonl" {
		return "application/jsonl"
	}
	return "text/plain; charset=utf-8"
}

// s3Time is how retain-until dates are shown in records: whole seconds,
// which is what S3 keeps.
func s3Time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
