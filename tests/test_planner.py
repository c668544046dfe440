"""The --time-limit planner: members x epochs from measured costs, as exact cases (pure functions)."""
from dataclasses import replace

import pytest

from ensemble.job.planner import (FINAL_BAND, BudgetPlan, BudgetSpend, Costs, Replanned, fitted_steps,
                                  last_epoch_band, plan_budget, plan_slot, replan_member, replan_steps, split_steps)
from ensemble.run.budget import TimeBudget

# round 1's 42000-row Fashion job on this machine: ~16 s start-up, 69 s an epoch, 20 s of predictions
BIG = Costs(startup_s=16.0, epoch_s=69.0, predict_s=20.0)
SMALL = Costs(startup_s=16.0, epoch_s=13.0, predict_s=5.0)


def test_members_grow_to_twice_the_recipe_then_a_last_one_at_least_the_recipes_length():
    # a 24-epoch member takes 16 + 24 * 13 + 5 = 333 s: one in 600 s, and the 267 s left hold
    # (267 - 21) / 13 = 18 epochs, at least the recipe's 12: a last member of 18
    assert plan_slot(600, SMALL, 12, cap=100, stretch=True) == (24, 18)
    assert plan_slot(580, SMALL, 12, cap=100, stretch=True) == (24, 17)
    # three whole 24-epoch members in 1000 s (999 s): nothing left for a fourth
    assert plan_slot(1000, SMALL, 12, cap=100, stretch=True) == (24, 24, 24)
    # 1100 s: the 101 s after three hold 6 epochs, under the recipe's 12: they go to the members as extra
    # epochs instead (1100 - 3 * 21 = 1037 s = 79.8 epochs -> 79 = 27 + 26 + 26)
    assert plan_slot(1100, SMALL, 12, cap=100, stretch=True) == (27, 26, 26)
    # 2400 s of BIG: one 24-epoch member (1692 s), 708 s left hold 9 epochs: one member of 34 instead
    assert plan_slot(2400, BIG, 12, cap=100, stretch=True) == (34,)


def test_a_budget_short_of_one_grown_member_plans_one_member_as_long_as_fits():
    # 1200 s of BIG: a 24-epoch member takes 1692 s; one member trains (1200 - 36) / 69 = 16.9 -> 16 epochs
    plan = plan_budget(1200, BIG, epochs=12)
    assert plan.member_epochs == [16]
    assert plan.planned_s == pytest.approx(16 + 16 * 69 + 20)
    assert plan.describe() == "1 member x 16 epochs, ~1140 s of 1200"
    # 198 s of SMALL: (198 - 21) / 13 = 13.6 -> 13 epochs
    assert plan_slot(198, SMALL, 12, cap=100, stretch=True) == (13,)


def test_epochs_that_were_asked_keep_their_length_and_a_last_member_holds_a_quarter():
    assert plan_slot(198, SMALL, 12, cap=100, stretch=False) == (12,)  # --epochs 12: not stretched
    # 3 whole members in 600 s (531 s), 69 s left: 3 epochs of a 4th need 60 s: a last member of 3
    assert plan_slot(600, SMALL, 12, cap=100, stretch=False) == (12, 12, 12, 3)
    # 580 s: the 49 s left hold 2 epochs, less than a quarter of 12: no last member, nothing stretched
    assert plan_slot(580, SMALL, 12, cap=100, stretch=False) == (12, 12, 12)
    plan = plan_budget(1200, BIG, epochs=12, stretch=False)
    assert plan.describe() == "1 member x 12 epochs + 1 x 4, ~1176 s of 1200"


def test_too_little_time_for_a_whole_member_plans_one_short_member_or_none():
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True) == (3,)
    assert plan_slot(30, SMALL, 12, cap=100, stretch=True) == ()   # 16 + 13 + 5 = 34 s > 30
    assert plan_slot(-5, SMALL, 12, cap=100, stretch=True) == ()   # past the deadline
    assert plan_budget(30, SMALL, 12).describe() == "no member fits in 30 s (one takes ~34 s with 1 epoch)"
    # once the job has members, one shorter than the recipe (12 epochs; with --epochs a quarter of them) is not
    # worth starting: it would only dilute the mean blend of the longer ones
    assert plan_slot(40, SMALL, 12, cap=100, stretch=True, first=True) == (1,)
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True, first=False) == ()
    assert plan_slot(176, SMALL, 12, cap=100, stretch=True, first=False) == ()  # 11 epochs
    assert plan_slot(177, SMALL, 12, cap=100, stretch=True, first=False) == (12,)
    assert plan_slot(40, SMALL, 12, cap=100, stretch=False, first=False) == ()
    assert plan_slot(60, SMALL, 12, cap=100, stretch=False, first=False) == (3,)


def test_a_member_cap_stretches_members_to_fill_the_time_up_to_four_times_the_recipe():
    assert plan_slot(1200, BIG, 12, cap=1, stretch=True) == (16,)       # (1200 - 36) / 69 = 16.9
    assert plan_slot(7200, SMALL, 12, cap=2, stretch=True) == (48, 48)  # capped at 4 x 12
    assert plan_slot(1200, BIG, 12, cap=1, stretch=False) == (12,)      # --epochs given: not stretched


def test_snapshot_members_keep_whole_cycles():
    # --snapshots 3: epochs in multiples of 3; 24-epoch members, then a last one of 18, 15 or 12 (17 -> 15)
    assert plan_slot(600, SMALL, 12, cap=100, stretch=True, multiple=3) == (24, 18)
    assert plan_slot(580, SMALL, 12, cap=100, stretch=True, multiple=3) == (24, 15)
    assert plan_slot(600, SMALL, 12, cap=100, stretch=False, multiple=3) == (12, 12, 12, 3)
    assert plan_slot(60, SMALL, 12, cap=100, stretch=True, multiple=3) == (3,)
    # 1100 s: three 24-epoch members and 79 epochs in all -> 26 whole cycles: 27 + 27 + 24
    assert plan_slot(1100, SMALL, 12, cap=100, stretch=True, multiple=3) == (27, 27, 24)


def test_slots_run_side_by_side_and_share_the_cap():
    # a cap of 3 on 2 slots: 2 and 1. Slot 1 fits both its 24-epoch members (666 s) and stretches them to
    # (700 - 2 * 21) / 13 = 50 epochs; slot 2's one member takes its 4x the recipe's, 48
    plan = plan_budget(700, SMALL, 12, slots=2, cap=3)
    assert plan.slots == ((25, 25), (48,))
    assert plan.member_epochs == [25, 48, 25]  # the order the slots start them
    assert plan.describe() == "1 member x 48 epochs + 2 x 25 on 2 slots, ~692 s of 700"
    # with --epochs: 12-epoch members, as many as the cap allows
    assert plan_budget(1200, SMALL, 12, slots=2, cap=3, stretch=False).slots == ((12, 12), (12,))


def test_a_running_member_is_part_of_the_plan_and_the_text_counts_from_the_runs_start():
    # the calibrating member chose 9 epochs and needs 9 * 13 + 5 s more; planned 20 s into a 300 s limit:
    # the 158 s after it hold no 12-epoch member (177 s), but one of (158 - 21) / 13 = 10 epochs
    plan = plan_budget(280, SMALL, 12, running=((9, 122.0),), elapsed_s=20, limit_s=300, tta=True)
    assert plan.slots == ((9, 10),)
    assert plan.describe() == "1 member x 10 epochs + 1 x 9, TTA, ~293 s of 300"


def test_plans_and_spends_round_trip_through_json():
    plan = plan_budget(1200, BIG, 12, tta=True, elapsed_s=3.0, limit_s=1200)
    again = BudgetPlan.from_dict(plan.to_dict())
    assert again == plan and again.describe() == plan.describe()
    spend = BudgetSpend(1200, plan, used_s=1170.0, members_s=1150.0)
    assert BudgetSpend.from_dict(spend.to_dict()) == spend and spend.used_share == 0.975


def test_the_runners_budget_plans_from_the_recorded_costs_and_then_from_what_it_measured():
    budget = TimeBudget(12, deadline=1200.0, cap=100, costs=BIG)
    assert budget.next_member_epochs(now=0.0, members_left=100) == 16  # as plan_budget(1200, BIG, 12)
    # late in the job, while no member has finished, a short member still starts (nothing else is trained yet);
    # once one has, a member needs the recipe's 12 epochs
    assert budget.next_member_epochs(now=1200 - 16 - 20 - 4 * 69, members_left=100, first=True) == 4
    assert budget.next_member_epochs(now=1200 - 16 - 20 - 4 * 69, members_left=100) == 0
    assert budget.next_member_epochs(now=1200 - 16 - 20 - 12 * 69, members_left=100) == 12
    assert budget.next_member_epochs(now=1199.0, members_left=100) == 0  # nothing fits: not started
    for epoch in (1, 2, 3):  # each attempt's first epoch traces the graph: not a steady epoch
        budget.epoch_measured(0, epoch, 80.0 if epoch == 1 else 60.0, first=epoch == 1)
    assert budget.measured_costs() == Costs(16.0, 60.0, 20.0)
    assert TimeBudget(12, deadline=100.0, cap=3).next_member_epochs(0.0, 3) is None  # no costs: it calibrates


def test_a_recorded_estimate_too_low_gives_way_to_the_first_epochs_and_start_ups_of_members_the_limit_stopped():
    """A rerun with far too low recorded costs: member-01's only epoch (its first, which traces) took 1.5 s and the
    limit stopped it 9 s after its start. With 3 s left, no member starts (it would run 7 s of start-up)."""
    budget = TimeBudget(6, deadline=12.0, cap=3, costs=Costs(0.01, 0.01, 0.01))
    assert budget.next_member_epochs(now=9.0, members_left=2) == 24  # the estimate alone: 4x the recipe fits
    budget.epoch_measured(1, 1, 1.5, first=True)
    assert budget.measured_costs() == Costs(0.01, 1.5, 0.01)  # no steady epoch yet: the first bounds it
    budget.member_measured(9.0, epochs_trained=1, predict_seconds=0.5, models=1, complete=False, epochs=6)
    assert budget.measured_costs() == Costs(7.0, 1.5, 0.5)  # 9 s - 1.5 s of epoch - 0.5 s of predictions
    assert budget.next_member_epochs(now=9.0, members_left=1) == 0
    assert budget.member_walls == []  # a stopped member's wall time says nothing about a whole member's
    budget.epoch_measured(2, 2, 1.2)
    assert budget.measured_costs().epoch_s == 1.2  # a steady epoch replaces the bound


def test_every_member_of_the_cap_shares_the_time_for_a_refit_jobs_folds():
    # 3 fold members in 300 s: alone, the plan is one 21-epoch member, which leaves two folds without one;
    # shared out, 300 - 3 * 21 = 237 s hold 18 epochs: 6 each
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True) == (21,)
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True, every=True) == (6, 6, 6)
    assert plan_slot(320, SMALL, 12, cap=3, stretch=True, every=True) == (7, 6, 6)  # 19 epochs: the first takes the odd one
    # plenty of time: at most the recipe's epochs with --epochs asked, 4x stretched
    assert plan_slot(3000, SMALL, 12, cap=3, stretch=False, every=True) == (12, 12, 12)
    assert plan_slot(3000, SMALL, 12, cap=3, stretch=True, every=True) == (48, 48, 48)
    # too little for all: as many as each get a cycle (3 would leave 2 epochs for 3; 2 leave 4); snapshots in
    # whole cycles
    assert plan_slot(100, SMALL, 12, cap=3, stretch=True, every=True) == (2, 2)
    assert plan_slot(215, Costs(60.0, 10.0, 10.0), 12, cap=3, stretch=True, every=True) == (4, 3)  # 75 s: 7 epochs
    assert plan_slot(20, SMALL, 12, cap=3, stretch=True, every=True) == ()
    assert plan_slot(300, SMALL, 12, cap=3, stretch=True, multiple=2, every=True) == (6, 6, 6)
    assert plan_budget(600, SMALL, 12, slots=2, cap=4, every=True).member_epochs == [21, 21, 21, 21]


REPLAN = Costs(startup_s=10, epoch_s=40, predict_s=20)


def test_a_lone_member_replanned_from_slower_epochs_is_shortened_to_end_by_the_deadline():
    # 2 epochs done, 1000 s left: 24 more epochs and the predictions take 980 s, a 25th would overrun
    assert replan_member(2, 1000, REPLAN, 12, cap=1, stretch=True, current=28) == Replanned(26, last=True)
    # epochs faster than the probe said: it grows to fill the time (30 s epochs: 32 more and 20 s of predictions)
    assert replan_member(2, 1000, replace(REPLAN, epoch_s=30), 12, cap=1, stretch=True, current=28) == \
        Replanned(34, last=True)


def test_a_replanned_member_of_asked_epochs_is_shortened_never_lengthened():
    assert replan_member(2, 1000, REPLAN, 12, cap=1, stretch=False, current=10) == Replanned(10, last=True)
    assert replan_member(2, 300, REPLAN, 12, cap=1, stretch=False, current=10) == Replanned(9, last=True)


def test_a_member_with_members_after_it_is_replanned_as_its_slots_first_and_is_not_the_last():
    # 2090 s for the slot: two grown members, the leftover too short for a third, spread as extra epochs
    assert replan_member(2, 2000, REPLAN, 12, cap=3, stretch=True, current=24) == Replanned(25, last=False)


def test_a_replanned_member_never_has_fewer_epochs_than_it_has_trained():
    assert replan_member(5, 10, REPLAN, 12, cap=1, stretch=True, current=8) == Replanned(5, last=True)


def test_a_member_replanned_again_is_lengthened_only_with_slack_to_spare():
    # 990 s left: 32 more epochs of 30 s and the predictions take 980 s, so 34 fit, but not with 15 s to spare
    faster = replace(REPLAN, epoch_s=30)
    assert replan_member(2, 990, faster, 12, cap=1, stretch=True, current=28) == Replanned(34, last=True)
    assert replan_member(2, 990, faster, 12, cap=1, stretch=True, current=28, grow_slack=0.5) == Replanned(33, True)
    # shortening needs no slack: 24 more epochs of 40 s take 980 s, so 26 stay with 990 s left and not with 970
    assert replan_member(2, 990, REPLAN, 12, cap=1, stretch=True, current=26, grow_slack=0.5) == Replanned(26, True)
    assert replan_member(2, 970, REPLAN, 12, cap=1, stretch=True, current=26, grow_slack=0.5) == Replanned(25, True)


# 100 steps an epoch; of each 40 s epoch, 10 s are its validation pass and commit, so a step costs 0.3 s
STEPS = 100


def test_a_run_in_steps_is_whole_epochs_and_a_partial_last_one():
    assert split_steps(2633, STEPS) == (27, 33)
    assert split_steps(2600, STEPS) == (26, None)
    assert split_steps(2601, STEPS) == (27, 1)
    assert split_steps(0, STEPS) == (1, None)


def test_the_steps_that_fit_are_whole_epochs_then_what_the_rest_holds_after_a_validation_pass():
    # 1000 s left: 980 s before the predictions, 24 whole epochs (960 s), then 20 s: 10 s of validation and
    # commit and 33 steps of 0.3 s
    assert fitted_steps(1000, REPLAN, 2, STEPS, 10.0) == 2633
    assert fitted_steps(972, REPLAN, 2, STEPS, 10.0) == 2573   # 23 whole, then 32 s: 73 steps
    # 12 s after 24 epochs hold 6 steps, under a tenth of an epoch: not worth a validation pass
    assert fitted_steps(992, REPLAN, 2, STEPS, 10.0) == 2600
    assert fitted_steps(15, REPLAN, 2, STEPS, 10.0) == 200     # nothing fits: the epochs done


def test_a_last_member_keeps_its_steps_while_they_fit_with_under_half_an_epoch_to_spare():
    # with 1000 s left, 2633 steps fit, and 2600 with half an epoch (20 s) to spare: anything between stays
    for current in (2600, 2610, 2633):
        assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, current) == current
    # outside the band, what fits with a quarter epoch to spare: 990 s, 24 epochs, 10 s hold no step
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, 2700) == 2600    # too long
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, 2000) == 2600    # much shorter than the time allows
    assert replan_steps(2, 1050, REPLAN, STEPS, 10.0, 2000) == 2733    # 1040 s: 25 epochs, then 33 steps in 20 s


def test_with_no_band_a_last_member_takes_every_step_that_fits():
    # 2633 steps fit in 1000 s with nothing to spare, and nothing shorter or longer is kept
    for current in (2600, 2610, 2633, 2700):
        assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, current, band=0.0) == 2633
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, 2610, cap=2620, band=0.0) == 2620   # never past its cap


def test_a_last_epochs_band_is_a_twentieth_of_an_epoch_and_a_second_twice_never_wider_than_the_band():
    assert last_epoch_band(40.0) == pytest.approx(2 * (0.05 + 1 / 40))  # 0.15 epochs: fits with 0.075 to spare
    assert last_epoch_band(4.0) == FINAL_BAND  # 2 x (0.05 + 0.25) = 0.6 epochs: more than the band's 0.5
    assert last_epoch_band(0.0) == FINAL_BAND


def test_a_capped_last_member_is_shortened_in_steps_never_lengthened_past_its_cap():
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, current=1000, cap=1000) == 1000   # fits: kept
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, current=2700, cap=2700) == 2600   # does not: shortened
    assert replan_steps(2, 1000, REPLAN, STEPS, 10.0, current=900, cap=1200) == 1200    # grows only to its cap
    assert replan_steps(5, 10, REPLAN, STEPS, 10.0, current=2700) == 500                # never below the epochs done


def test_a_running_member_still_needs_its_epochs_left_its_partial_last_one_by_its_share_and_its_predictions():
    own = Costs(startup_s=12.4, epoch_s=12.4, predict_s=8.4)
    assert own.finishing_s(14, 2, 66 / 152) == pytest.approx((11 + 66 / 152) * 12.4 + 8.4)
    assert own.finishing_s(14, 13, 66 / 152) == pytest.approx(66 / 152 * 12.4 + 8.4)  # in its partial last epoch
    assert own.finishing_s(14, 2) == 12 * 12.4 + 8.4  # whole epochs
    assert own.finishing_s(14, 14) == 8.4 and own.finishing_s(14, 0) == own.member_s(14) - own.startup_s
