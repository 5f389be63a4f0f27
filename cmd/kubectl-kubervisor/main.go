// Command kubectl-kubervisor is the `kubectl kubervisor` plugin (SPEC §7, §10): it lists
// KubervisorServices, shows one with its pods, activates or deactivates the selector of the Service it
// supervises, and asks the controller to eject or restore a pod by hand. This file only wires flags and the
// clients; the logic is in internal/plugin.
package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	kvv1 "github.com/kubervisor/kubervisor/api/v1alpha1"
	"github.com/kubervisor/kubervisor/internal/plugin"
)

func main() {
	// Errors are returned and printed once below; controller-runtime's own logs would only add noise.
	logf.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// kubeFlags are kubectl's connection flags (--kubeconfig, --context, -n/--namespace, --server, --token,
// --as, --request-timeout, …) from k8s.io/cli-runtime, resolved the way kubectl resolves them.
type kubeFlags struct {
	config *genericclioptions.ConfigFlags
}

func (f *kubeFlags) bind(cmd *cobra.Command) {
	f.config = genericclioptions.NewConfigFlags(true)
	f.config.AddFlags(cmd.PersistentFlags())
}

// connect builds the plugin and the namespace of the request from the parsed flags.
func (f *kubeFlags) connect(out io.Writer) (*plugin.Plugin, string, error) {
	loader := f.config.ToRawKubeConfigLoader()
	if name := ptr.Deref(f.config.Context, ""); name != "" {
		// clientcmd reports an unknown context among other validation errors; say it plainly.
		raw, err := loader.RawConfig()
		if err != nil {
			return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
		}
		if _, ok := raw.Contexts[name]; !ok {
			known := slices.Sorted(maps.Keys(raw.Contexts))
			if len(known) == 0 {
				known = append(known, "none")
			}
			return nil, "", fmt.Errorf("context %q not found in kubeconfig (contexts: %s)", name, strings.Join(known, ", "))
		}
	}
	cfg, err := f.config.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-kubervisor"
	namespace, _, err := loader.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the namespace from kubeconfig: %w", err)
	}
	scheme, err := plugin.NewScheme()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("creating the API client: %w", err)
	}
	auth, err := authnv1client.NewForConfig(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("creating the authentication client: %w", err)
	}
	return &plugin.Plugin{Client: c, Auth: auth, Out: out, Clock: clock.RealClock{}}, namespace, nil
}

func newRootCommand(out io.Writer) *cobra.Command {
	var kf kubeFlags
	var allNamespaces bool
	list := func(cmd *cobra.Command, _ []string) error {
		p, ns, err := kf.connect(out)
		if err != nil {
			return err
		}
		return p.List(cmd.Context(), ns, allNamespaces)
	}
	// onOne runs a subcommand that takes the name of one KubervisorService.
	onOne := func(run func(p *plugin.Plugin, ctx context.Context, ns, name string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			p, ns, err := kf.connect(out)
			if err != nil {
				return err
			}
			return run(p, cmd.Context(), ns, args[0])
		}
	}

	root := &cobra.Command{
		Use:   "kubervisor",
		Short: "Inspect KubervisorServices, switch Kubervisor on or off for a Service, eject or restore pods by hand",
		Long: "Inspect KubervisorServices, switch Kubervisor on or off for a Service, eject or restore pods by hand.\n\n" +
			"With no subcommand, lists the KubervisorServices of the namespace.",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl kubervisor"},
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          list,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	kf.bind(root)
	const allUsage = "List the KubervisorServices of every namespace."
	root.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, allUsage)

	listCmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List KubervisorServices with their pod counts and conditions",
		Example: "  kubectl kubervisor list -n shop\n  kubectl kubervisor list -A",
		Args:    cobra.NoArgs,
		RunE:    list,
	}
	listCmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, allUsage)

	getCmd := &cobra.Command{
		Use:     "get NAME",
		Short:   "Show a KubervisorService: conditions, breakers, and its pods with what the activator will do next",
		Example: "  kubectl kubervisor get pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Get),
	}
	activateCmd := &cobra.Command{
		Use:     "activate NAME",
		Short:   `Add kubervisor/traffic: "yes" to the selector of the Service the KubervisorService supervises`,
		Example: "  kubectl kubervisor activate pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Activate),
	}
	deactivateCmd := &cobra.Command{
		Use:     "deactivate NAME",
		Short:   "Remove kubervisor/traffic from the selector of the Service the KubervisorService supervises",
		Example: "  kubectl kubervisor deactivate pricer -n shop",
		Args:    cobra.ExactArgs(1),
		RunE:    onOne((*plugin.Plugin).Deactivate),
	}
	root.AddCommand(listCmd, getCmd, activateCmd, deactivateCmd, ejectCmd(&kf, out), restoreCmd(&kf, out))
	return root
}

// The help common to eject and restore: what the command writes and how it ends.
const requestHelp = "The plugin writes a request on the pod (annotations kubervisor/request, -by, -at, -reason, -for, -force, " +
	"with your username from a SelfSubjectReview) and never its labels: the Kubervisor controller carries the request out " +
	"and answers in the annotation kubervisor/request-outcome. The command waits --wait for that answer: it succeeds on " +
	"\"Done: …\" and fails on \"Refused: …\" or when the wait runs out (the request then stays pending)."

func ejectCmd(kf *kubeFlags, out io.Writer) *cobra.Command {
	r := &plugin.ManualRequest{Action: kvv1.RequestEject}
	cmd := requestCmd(kf, out, r, &cobra.Command{
		Use:   "eject POD",
		Short: "Ask the controller to take a supervised pod out of traffic by hand, within the floor unless --force",
		Long: "Ask the controller to take a supervised pod out of traffic by hand. The controller honours the floor " +
			"(minPodsAvailableCount, minPodsAvailableRatio) unless --force, and keeps the pod out until it is restored or " +
			"--for passes; the activator's mode does not apply to it.\n\n" + requestHelp,
		Example: "  kubectl kubervisor eject pricer-7d9f8-x2k -n shop --reason \"bad node, INC-42\" --for 2h\n" +
			"  kubectl kubervisor eject pricer-7d9f8-x2k -n shop --force --wait 0",
	}, "Why, recorded on the pod, in events and in the KubervisorService's status.manual[].")
	cmd.Flags().StringVar(&r.For, "for", "", "How long the pod stays out, a duration such as 30m or 2h (default: until restored).")
	cmd.Flags().BoolVar(&r.Force, "force", false, "Eject even when the floor would keep the pod in traffic.")
	return cmd
}

func restoreCmd(kf *kubeFlags, out io.Writer) *cobra.Command {
	return requestCmd(kf, out, &plugin.ManualRequest{Action: kvv1.RequestRestore}, &cobra.Command{
		Use:   "restore POD",
		Short: "Ask the controller to put a supervised pod back in traffic at once, a paused pod included",
		Long: "Ask the controller to put a supervised pod back in traffic at once: a pod ejected by hand or by a breaker, " +
			"or a paused pod.\n\n" + requestHelp,
		Example: "  kubectl kubervisor restore pricer-7d9f8-x2k -n shop --reason \"node drained\"",
	}, "Why, recorded on the pod and in events.")
}

// requestCmd completes the command of a manual request r: one POD argument, --reason and --wait, and
// sending r as the parsed flags left it.
func requestCmd(kf *kubeFlags, out io.Writer, r *plugin.ManualRequest, cmd *cobra.Command, reasonUsage string) *cobra.Command {
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		p, ns, err := kf.connect(out)
		if err != nil {
			return err
		}
		return p.Request(cmd.Context(), ns, args[0], *r)
	}
	cmd.Flags().StringVar(&r.Reason, "reason", "", reasonUsage)
	cmd.Flags().DurationVar(&r.Wait, "wait", plugin.DefaultWait, "How long to wait for the controller's answer; 0: do not wait.")
	return cmd
}
