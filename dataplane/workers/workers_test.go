package workers

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a worker behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// until polls cond for up to 10 s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestIdleWorkerTakesTheNextTask: a worker whose task returned waits for
// the next, and runs it, instead of a new goroutine.
func TestIdleWorkerTakesTheNextTask(t *testing.T) {
	p := New(4, time.Minute)
	defer p.Close()
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	until(t, "the worker to be idle", func() bool { return p.Idle() == 1 })
	release := make(chan struct{})
	running := make(chan struct{})
	p.Go(func() { close(running); <-release })
	<-running
	if n := p.Idle(); n != 0 {
		t.Errorf("%d idle workers while the second task runs, want 0 (the idle one took it)", n)
	}
	close(release)
	until(t, "the worker to be idle again", func() bool { return p.Idle() == 1 })
}

// TestIdleWorkersAreBounded: past maxIdle, workers whose task returned
// end.
func TestIdleWorkersAreBounded(t *testing.T) {
	p := New(3, time.Minute)
	defer p.Close()
	var started, finished sync.WaitGroup
	release := make(chan struct{})
	for range 10 {
		started.Add(1)
		finished.Add(1)
		p.Go(func() { started.Done(); <-release; finished.Done() })
	}
	started.Wait()
	close(release)
	finished.Wait()
	until(t, "the workers to park or end", func() bool { return p.Idle() == 3 })
	time.Sleep(10 * time.Millisecond)
	if n := p.Idle(); n != 3 {
		t.Errorf("%d idle workers after 10 tasks, want maxIdle (3)", n)
	}
}

// TestIdleWorkersEnd: a worker idle for the idle timeout ends (goleak
// checks that its goroutine is gone), and the pool still runs tasks
// after.
func TestIdleWorkersEnd(t *testing.T) {
	p := New(8, 20*time.Millisecond)
	defer p.Close()
	var wg sync.WaitGroup
	for range 5 {
		wg.Add(1)
		p.Go(wg.Done)
	}
	wg.Wait()
	until(t, "the idle workers to end", func() bool { return p.Idle() == 0 })
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
}

// TestClose: Close ends the idle workers and, once its task returns, a
// busy one; tasks given after Close still run.
func TestClose(t *testing.T) {
	p := New(8, time.Minute)
	done := make(chan struct{})
	p.Go(func() { close(done) })
	<-done
	release := make(chan struct{})
	running := make(chan struct{})
	p.Go(func() { close(running); <-release })
	<-running
	p.Close()
	if n := p.Idle(); n != 0 {
		t.Errorf("%d idle workers after Close", n)
	}
	close(release)
	ran := make(chan struct{})
	p.Go(func() { close(ran) })
	<-ran
	until(t, "no idle worker after Close", func() bool { return p.Idle() == 0 })
}

// BenchmarkGo: a task handed to an idle worker against a new goroutine
// for each, with a task that needs a grown stack.
func BenchmarkGo(b *testing.B) {
	deep := func(wg *sync.WaitGroup) func() {
		return func() {
			var buf [16 << 10]byte
			buf[len(buf)-1] = 1
			sink = buf[len(buf)-1]
			wg.Done()
		}
	}
	b.Run("pool", func(b *testing.B) {
		p := New(64, time.Minute)
		defer p.Close()
		var wg sync.WaitGroup
		task := deep(&wg)
		for b.Loop() {
			wg.Add(1)
			p.Go(task)
			wg.Wait()
		}
	})
	b.Run("goroutine", func(b *testing.B) {
		var wg sync.WaitGroup
		task := deep(&wg)
		for b.Loop() {
			wg.Add(1)
			go task()
			wg.Wait()
		}
	})
}

var sink byte
