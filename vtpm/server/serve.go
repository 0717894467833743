package server

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// conn is what a protocol handler needs from a connection; net.Conn has
// it, and the fuzz targets feed byte streams through a fake.
type conn interface {
	io.Reader
	io.Writer
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// errProtocol ends a connection whose client broke the protocol.
var errProtocol = errors.New("server: protocol violation")

// serveListener accepts connections on ln until ctx is done or a handler
// returns a non-nil error other than errProtocol, and runs handle on each,
// at most Config.MaxConns at once. It closes ln, ends every connection and
// waits for the handlers before it returns.
func (in *Instance) serveListener(ctx context.Context, ln net.Listener, handle func(context.Context, net.Conn) error) error {
	return in.serveListenerN(ctx, ln, in.cfg.maxConns(), handle)
}

// serveListenerN is serveListener with at most maxConns connections.
func (in *Instance) serveListenerN(ctx context.Context, ln net.Listener, maxConns int, handle func(context.Context, net.Conn) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	if !in.track(ln) {
		ln.Close()
		return ErrClosed
	}
	defer in.untrack(ln)

	sem := make(chan struct{}, maxConns)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return in.serveErr(ctx)
		}
		c, err := ln.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil || in.isClosed() {
				return in.serveErr(ctx)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			ln.Close()
			return err
		}
		if !in.track(c) {
			c.Close()
			<-sem
			return ErrClosed
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer in.untrack(c)
			defer c.Close()
			unwatch := context.AfterFunc(ctx, func() { c.Close() })
			defer unwatch()
			err := handle(ctx, c)
			switch {
			case err == nil, errors.Is(err, errProtocol), errors.Is(err, io.EOF),
				errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
				if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.EOF) {
					in.log.Info("server: connection ended", "remote", c.RemoteAddr().String(), "err", err)
				}
			case errors.Is(err, ErrStopped), errors.Is(err, ErrClosed), errors.Is(err, errTerminate):
				cancel(err)
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					in.log.Info("server: connection timed out", "remote", c.RemoteAddr().String())
					return
				}
				in.log.Info("server: connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serveErr is what a Serve method returns once its context is done.
func (in *Instance) serveErr(ctx context.Context) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStopped) || errors.Is(cause, ErrClosed) || errors.Is(cause, errTerminate) {
		return cause
	}
	if in.isClosed() {
		return ErrClosed
	}
	return ctx.Err()
}

func (in *Instance) isClosed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.closed
}

// writeFrame writes one response in a single Write (some clients read a
// response with a single read), under the write timeout.
func (in *Instance) writeFrame(c conn, b []byte) error {
	c.SetWriteDeadline(time.Now().Add(in.cfg.writeTimeout()))
	_, err := c.Write(b)
	return err
}

// readIdle reads len(b) bytes that start a new frame: the client may take
// up to idle to send the first, and then the frame timeout for the rest.
// An idle of zero waits without limit.
func (in *Instance) readStart(c conn, b []byte, idle time.Duration) error {
	if idle > 0 {
		c.SetReadDeadline(time.Now().Add(idle))
	} else {
		c.SetReadDeadline(time.Time{})
	}
	if _, err := io.ReadFull(c, b[:1]); err != nil {
		return err
	}
	return in.readRest(c, b[1:])
}

// readRest reads the rest of a frame under the frame timeout.
func (in *Instance) readRest(c conn, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.SetReadDeadline(time.Now().Add(in.cfg.frameTimeout()))
	_, err := io.ReadFull(c, b)
	return err
}
