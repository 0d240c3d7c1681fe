package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/tribune-mesh/tribune/agent"
	"github.com/tribune-mesh/tribune/agent/config"
	"github.com/tribune-mesh/tribune/logfile"
)

// runAgent loads the configuration, starts an agent and runs it until a
// signal or a leave request.
func runAgent(args []string, stdout, stderr io.Writer) int {
	cfg, warnings, err := config.Load(config.LoadOptions{Args: args, FlagOutput: stderr})
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	logger, logFile, err := newAgentLogger(cfg, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "==> %v\n", err)
		return 1
	}
	if logFile != nil {
		defer logFile.Close()
	}
	for _, w := range warnings {
		logger.Warn(w)
	}
	a, err := agent.New(cfg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "==> Error starting agent: %v\n", err)
		return 1
	}
	a.SetReloader(func() (*config.Config, []string, error) {
		return config.Load(config.LoadOptions{Args: args})
	})
	fmt.Fprintf(stdout, "==> Tribune agent running!\n    Node name: %q\n    Datacenter: %q\n    Server: %v\n    HTTP: %s\n",
		cfg.NodeName, cfg.Datacenter, cfg.Server, a.HTTPAddr())
	if cfg.DevMode {
		fmt.Fprintln(stdout, "==> Dev mode: all data is in memory and lost on exit.")
	}

	sigCh := make(chan os.Signal, 4)
	signal.Notify(sigCh, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigCh)
	for {
		select {
		case sig := <-sigCh:
			if sig == syscall.SIGHUP {
				logger.Info("caught SIGHUP, reloading configuration")
				if err := a.Reload(); err != nil {
					logger.Error("reload failed", "error", err)
				}
				continue
			}
			logger.Info("caught signal, shutting down", "signal", sig.String())
			if (sig == os.Interrupt && !cfg.SkipLeaveOnInterrupt) || (sig == syscall.SIGTERM && cfg.LeaveOnTerminate) {
				logger.Info("leaving the cluster gracefully")
				a.SetLeaveOnShutdown()
			}
		case <-a.LeaveCh():
			logger.Info("leave requested, shutting down")
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		fmt.Fprintf(stderr, "==> Error during shutdown: %v\n", err)
		return 1
	}
	return 0
}

// newAgentLogger is the agent's logger: stdout, and the rotating log_file
// when one is set (the returned writer, to close at exit). It is an
// intercept logger so that /v1/agent/monitor can stream the agent's logs.
func newAgentLogger(cfg *config.Config, stdout io.Writer) (hclog.InterceptLogger, *logfile.Writer, error) {
	level := hclog.LevelFromString(cfg.LogLevel)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	out := stdout
	var file *logfile.Writer
	if cfg.LogFile != "" {
		var err error
		file, err = logfile.New(logfile.Config{Path: cfg.LogFile, RotateBytes: int64(cfg.LogRotateBytes),
			RotateDuration: cfg.LogRotateDuration, MaxFiles: cfg.LogRotateMaxFiles})
		if err != nil {
			return nil, nil, err
		}
		// stdout first: a failing file never costs the terminal a line.
		out = io.MultiWriter(stdout, file)
	}
	logger := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "tribune", Level: level, Output: out, JSONFormat: cfg.LogJSON})
	return logger, file, nil
}

// version is the build version.
const version = agent.Version

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", "pretty", "Output format: pretty or json")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	switch strings.ToLower(*format) {
	case "json":
		fmt.Fprintf(stdout, "{\n    \"Version\": %q,\n    \"Revision\": \"\",\n    \"Prerelease\": \"\",\n    \"FullVersion\": %q\n}\n", version, version)
	case "pretty":
		fmt.Fprintf(stdout, "Tribune v%s\nProtocol 2 spoken by default, understands 2 to 3 (agent will automatically use protocol >2 when speaking to compatible agents)\n", version)
	default:
		fmt.Fprintf(stderr, "Invalid format %q: use pretty or json\n", *format)
		return 1
	}
	return 0
}
